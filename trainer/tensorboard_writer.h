// TensorBoard event files without TensorFlow or protobuf: TFRecord framing around hand-encoded
// Event messages holding scalar summaries (what torch.utils.tensorboard's add_scalar writes).
#pragma once

#include <cstdint>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

namespace titan {

class TensorBoardWriter {
 public:
  // Creates `folder` and events.out.tfevents.{unix seconds}.{hostname}.{pid}.0 in it (the name
  // TensorBoard globs), starting with the file_version event. Throws std::runtime_error naming
  // the folder when it cannot be written.
  explicit TensorBoardWriter(const std::string& folder);

  // One event at `step` with one simple_value per (tag, value), flushed so a killed run keeps it.
  void add_scalars(int64_t step, const std::vector<std::pair<std::string, double>>& scalars);

  const std::string& path() const { return path_; }

 private:
  void write_record(const std::string& payload);

  std::string path_;
  std::ofstream out_;
};

}  // namespace titan

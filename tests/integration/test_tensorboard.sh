#!/usr/bin/env bash
# metrics.enable_tensorboard: the real tensorboard package reads our event files. Every scalar tag of
# TorchTitan's MetricsProcessor is present at every logged step, with the values of the log line;
# a resumed run adds a file whose steps continue; save_for_all_ranks writes rank_{R} folders; a
# folder that cannot be written is a one-line error before training.
source "$(dirname "$0")/lib.sh"
# A schedule whose warmup, stable and decay phases all fit in 2 to 5 steps (no adjustment).
TB=("${SMALL[@]}" --training.seq_len 64 --lr_scheduler.warmup_steps 1 --lr_scheduler.decay_ratio 0.5 --metrics.enable_tensorboard)

# Steps 1, 2 and 4 are logged (log_freq 2), then a resume to step 5 logs step 5.
stamp_before=$(date +%Y%m%d-%H%M)
CK=(--checkpoint.enable --checkpoint.interval 4 --checkpoint.no-last_save_model_only --job.dump_folder "$WORK/run")
train "$WORK/run1.log" "${TB[@]}" "${CK[@]}" --training.steps 4 --metrics.log_freq 2
[[ $RC -eq 0 ]] || { cat "$WORK/run1.log"; fail "first run exited $RC"; }
stamp_after=$(date +%Y%m%d-%H%M)
first=$(find "$WORK/run/tb" -name 'events.out.tfevents.*')
[[ $(echo "$first" | wc -l) -eq 1 ]] || fail "expected one event file, found: $first"
stamp=$(basename "$(dirname "$first")")
[[ $stamp =~ ^[0-9]{8}-[0-9]{4}$ && ! $stamp < $stamp_before && ! $stamp > $stamp_after ]] ||
  fail "event folder $stamp is not the run's %Y%m%d-%H%M"
[[ $(dirname "$(dirname "$first")") == "$WORK/run/tb" ]] || fail "event folder is not tb/{timestamp}: $first"
[[ $(basename "$first") =~ ^events\.out\.tfevents\.[0-9]{10}\.$(hostname)\.[0-9]+\.0$ ]] || fail "event file name: $first"
train "$WORK/run2.log" "${TB[@]}" "${CK[@]}" --training.steps 5
[[ $RC -eq 0 ]] || { cat "$WORK/run2.log"; fail "resumed run exited $RC"; }
grep -q "Training starts at step 5" "$WORK/run2.log" || fail "the second run did not resume at step 5"
second=$(find "$WORK/run/tb" -name 'events.out.tfevents.*' | grep -vxF "$first")
[[ $(echo "$second" | wc -l) -eq 1 ]] || fail "the resumed run did not add one event file: $second"

# save_for_all_ranks: one folder per rank, every rank's own log line.
LOG_RANK=0,1 NGPU=2 train "$WORK/all.log" "${TB[@]}" --training.steps 2 --parallelism.data_parallel_shard_degree 2 \
  --metrics.save_for_all_ranks --job.dump_folder "$WORK/all"
[[ $RC -eq 0 ]] || { cat "$WORK/all.log"; fail "2-rank save_for_all_ranks run exited $RC"; }
[[ "$(cd "$WORK/all/tb" && echo */*)" =~ ^[0-9]{8}-[0-9]{4}/rank_0\ [0-9]{8}-[0-9]{4}/rank_1$ ]] ||
  fail "save_for_all_ranks folders: $(cd "$WORK/all/tb" && echo */*)"

# By default one rank writes, TorchTitan's metrics rank: under pipeline parallelism the last stage's first.
LOG_RANK=0,1 NGPU=2 train "$WORK/pp.log" "${TB[@]}" --training.steps 2 --parallelism.pipeline_parallel_degree 2 \
  --parallelism.pipeline_parallel_schedule 1F1B --job.dump_folder "$WORK/pp"
[[ $RC -eq 0 ]] || { cat "$WORK/pp.log"; fail "2-rank pipeline run exited $RC"; }
[[ "$(grep "TensorBoard logging enabled" "$WORK/pp.log" | cut -c1-9)" == "[rank1]: " ]] || fail "the pipeline's rank 1 does not log alone"
[[ "$(cd "$WORK/pp/tb" && echo */*)" =~ ^[0-9]{8}-[0-9]{4}/events\.out\.tfevents\.[^/]*$ ]] ||
  fail "pipeline run's TensorBoard files: $(cd "$WORK/pp/tb" && echo */*)"

# A file where the TensorBoard folder goes: one error line naming it, before any step.
mkdir -p "$WORK/blocked" && touch "$WORK/blocked/tb"
train "$WORK/blocked.log" "${TB[@]}" --training.steps 2 --job.dump_folder "$WORK/blocked"
[[ $RC -ne 0 ]] || fail "a blocked TensorBoard folder did not fail"
[[ $(grep -c "error" "$WORK/blocked.log") -eq 1 ]] &&
  grep -qE "^error: cannot create the TensorBoard folder $WORK/blocked/tb/[0-9]{8}-[0-9]{4}: Not a directory$" "$WORK/blocked.log" &&
  ! grep -q "Training starts" "$WORK/blocked.log" || { cat "$WORK/blocked.log"; fail "blocked TensorBoard folder message"; }

# Each check: event file, its run's log, rank, logged steps, training.steps (the LR schedule), log_freq, dp and pp degrees.
cuda=$(grep -q "device cuda" "$WORK/run1.log" && echo 1 || echo 0)
"$TITAN_PYTHON" - "$cuda" \
  "$first|$WORK/run1.log|0|1,2,4|4|2|1|1" "$second|$WORK/run2.log|0|5|5|1|1|1" \
  "$(echo "$WORK"/all/tb/*/rank_0/events.*)|$WORK/all.log|0|1,2|2|1|2|1" \
  "$(echo "$WORK"/all/tb/*/rank_1/events.*)|$WORK/all.log|1|1,2|2|1|2|1" \
  "$(echo "$WORK"/pp/tb/*/events.*)|$WORK/pp.log|1|1,2|2|1|1|2" <<'PY'
import re, struct, sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c
sys.path.insert(0, "tests/reference")
from llama3_reference import lr_factor  # TorchTitan's warmup-stable-decay schedule

TAGS = ["loss_metrics/global_avg_loss", "loss_metrics/global_max_loss", "grad_norm", "throughput(tps)", "tflops",
        "mfu(%)", "time_metrics/end_to_end(s)", "time_metrics/data_loading(s)", "time_metrics/data_loading(%)",
        "memory/max_reserved(GiB)", "memory/max_reserved(%)", "n_tokens_seen", "lr"]
if sys.argv[1] == "1":
    TAGS += ["memory/max_active(GiB)", "memory/max_active(%)", "memory/num_alloc_retries", "memory/num_ooms"]
LINE = re.compile(r"step: *(\d+) +loss: +([\d.]+) +grad_norm: +([\d.]+) +memory: +([\d.]+)GiB\(([\d.]+)%\) +"
                  r"tps: ([\d,]+) +tflops: ([\d.,]+) +mfu: ([\d.]+)%")


def records(path):  # TFRecord frames, each checked with tensorboard's own masked CRC32C
    data, pos, n = open(path, "rb").read(), 0, 0
    while pos < len(data):
        header = data[pos:pos + 8]
        assert struct.unpack("<I", data[pos + 8:pos + 12])[0] == masked_crc32c(header), f"{path}: length CRC"
        size = struct.unpack("<Q", header)[0]
        payload = data[pos + 12:pos + 12 + size]
        assert struct.unpack("<I", data[pos + 12 + size:pos + 16 + size])[0] == masked_crc32c(payload), f"{path}: data CRC"
        pos, n = pos + 16 + size, n + 1
    return n


def close(tb, printed, decimals):  # equal to the printed precision (TensorBoard holds float32)
    return abs(tb - printed) <= 0.5 * 10 ** -decimals + 1e-6 * abs(printed)


for check in sys.argv[2:]:
    path, log, rank, steps, total, log_freq, dp, pp = check.split("|")
    steps, total, log_freq, dp, pp = [int(s) for s in steps.split(",")], int(total), int(log_freq), int(dp), int(pp)
    rank_tokens = 4 * 64  # local_batch_size x seq_len
    assert records(path) == 1 + len(steps), f"{path}: {records(path)} records for steps {steps}"
    acc = EventAccumulator(path, size_guidance={"scalars": 0})
    acc.Reload()
    assert acc.file_version == 2.0, acc.file_version
    assert sorted(acc.Tags()["scalars"]) == sorted(TAGS), f"{path}: tags {sorted(acc.Tags()['scalars'])}"
    value = {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in TAGS}
    for tag in TAGS:
        assert sorted(value[tag]) == steps, f"{path}: {tag} at steps {sorted(value[tag])}, expected {steps}"
    prefix = f"[rank{rank}]: " if "[rank" in open(log).read() else ""
    lines = {int(m[1]): m for m in (LINE.search(l) for l in open(log) if l.startswith(prefix)) if m}
    previous = steps[0] - 1
    for step in steps:
        m, v = lines[step], {tag: value[tag][step] for tag in TAGS}
        v["at"] = f"{path} step {step}"
        num = lambda i: float(m[i].replace(",", ""))
        for tag, i, decimals in [("loss_metrics/global_avg_loss", 2, 5), ("grad_norm", 3, 4), ("memory/max_reserved(GiB)", 4, 2),
                                 ("memory/max_reserved(%)", 5, 2), ("throughput(tps)", 6, 0), ("tflops", 7, 2), ("mfu(%)", 8, 2)]:
            assert close(v[tag], num(i), decimals), f"{path} step {step}: {tag} {v[tag]} but the log line says {m[i]}"
        assert v["loss_metrics/global_max_loss"] >= v["loss_metrics/global_avg_loss"] * (1 - 1e-6), v
        if dp == 1:  # its own loss is the global one
            assert abs(v["loss_metrics/global_max_loss"] - v["loss_metrics/global_avg_loss"]) <= 1e-6 * v["loss_metrics/global_avg_loss"], v
        assert abs(v["lr"] - 8e-4 * lr_factor(step - 1, dict(steps=total, warmup_steps=1, decay_ratio=0.5, min_lr_factor=0.0))) < 1e-9, v
        assert v["n_tokens_seen"] == dp * rank_tokens * step, v
        # end_to_end is the time since the last logged step over log_freq, as TorchTitan's; tps is per device
        since = rank_tokens * (step - previous) / pp
        assert abs(v["throughput(tps)"] * v["time_metrics/end_to_end(s)"] * log_freq - since) < 1e-3 * since, v
        assert 0 <= v["time_metrics/data_loading(%)"] <= 100 and v["time_metrics/data_loading(s)"] >= 0, v
        previous = step
    print(f"{path.split('/tb/')[1]}: {len(TAGS)} tags at steps {steps} match the log")
PY
echo "PASS"

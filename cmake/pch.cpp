// Anchor for the shared precompiled header (models/common/torch_api.h).

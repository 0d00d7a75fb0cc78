// checkpoint.hpp: the HDF5 checkpoint of one model (an ELM, the seed or the dense baseline).
//   datasets  /params /adam_m /adam_v   fp32, ParamLayout order (see params.hpp)
//             /layout/name /layout/shape /layout/offset /layout/count   the tensors of that
//             order: name (strings), shape (int64 [n, 2]; a 1-D tensor's second entry is 0),
//             offset and count (int64 [n], in floats from the start of /params)
//   attributes format = "btm-checkpoint", format_version, name, n_layer, n_head, d_model,
//              context, vocab_size, vocab_multiple, n_params, step, target_steps,
//              schedule_steps, micro_batch, micro_batches (the global batch of the current
//              phase, fixed when it starts: budget.hpp),
//              sampler_seed, sampler_position, tokens, domains, config (INI text),
//              tokenizer and vocab_hash (of the corpora it trained on: Tokenizer::vocab_hash;
//              "" where not known), btm_version, btm_commit (build_info.hpp), written_at (ISO
//              8601 UTC), weights_only (1: no AdamW moments), params_dtype (float32 | bfloat16)
//   A branch of the seed that has not trained yet holds no datasets: its attribute state_from
//   names the checkpoint in the same directory whose state it starts from (seed.h5) and
//   state_from_step that checkpoint's step, so branching writes no copy of the seed. Loading it
//   reads that file's state (refused if the file is gone or at another step); its first save
//   writes a full checkpoint.
//   A weights-only checkpoint (btm export --weights-only, for sharing) holds /params and
//   /layout alone, in float32 or bfloat16 (the upper 16 bits of the float32, as uint16): it is
//   read for its weights (eval, export, generate, logits, forest add), never trained further.
// Formats 1 (before the global batch was recorded) and 2 (before /layout, the tokenizer and the
// build) are read too; format 1 with micro_batch = 0: it can be evaluated and branched from, not
// trained further.
// Written atomically (h5::AtomicFile); read back with checks of version, shapes and finite
// values, every error naming the file. A checkpoint is its header (CheckpointInfo: the
// attributes, cheap to read) and its state (the three vectors).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "btm/config/config.hpp"
#include "btm/dist/comm.hpp"
#include "btm/model/global_batch.hpp"

namespace btm {

constexpr int kCheckpointFormatVersion = 3;  // 1 and 2 are read too

struct CheckpointInfo {
  std::string name;
  ModelConfig model;
  std::int64_t step = 0;            // optimizer updates done: the schedule position
  std::int64_t target_steps = 0;    // training is complete at this step
  std::int64_t schedule_steps = 0;  // total steps of the learning-rate schedule it follows
  GlobalBatch batch;                // of the current phase; 0 x 0: none (an average, or format 1)
  std::uint64_t sampler_seed = 0;
  std::uint64_t sampler_position = 0;  // samples drawn by the current phase's sampler
  std::uint64_t tokens = 0;            // tokens trained on over the model's whole lineage
  std::vector<std::string> domains;    // what the current phase trains on
  std::string config_ini;
  // Where the state is another checkpoint's (a branch not yet trained): its file name in the
  // same directory, and its step then. Empty: the state is this file's own.
  std::string state_from;
  std::int64_t state_from_step = 0;
  // The tokenizer of the corpora it trained on and its Tokenizer::vocab_hash ("": not known, a
  // checkpoint of format 1 or 2).
  std::string tokenizer, vocab_hash;
  // As read (never written from here: saving records this build and the time).
  std::string btm_version, btm_commit, written_at;
  bool weights_only = false;  // params only (btm export --weights-only): not trainable

  bool finished() const { return step >= target_steps; }
};

struct Checkpoint : CheckpointInfo {
  std::vector<float> params, adam_m, adam_v;
};

void save_checkpoint(const std::filesystem::path& file, const Checkpoint& checkpoint);
// The weights of `checkpoint` alone (its header with weights_only = 1, /params, /layout), in
// float32 or, with bf16, bfloat16 (rounded to nearest even): for sharing a model.
void save_weights_only(const std::filesystem::path& file, const Checkpoint& checkpoint, bool bf16);
// A checkpoint of `info` whose state is that of `source` (a checkpoint in the same directory,
// at its current step): the header only, no copy of the vectors. Returns the header written.
CheckpointInfo save_checkpoint_reference(const std::filesystem::path& file, CheckpointInfo info,
                                         const std::filesystem::path& source);
// Loads and verifies. `expect` (if given) must match the stored model shape. With
// with_optimizer false, adam_m/adam_v are left empty; with it, a weights-only checkpoint is
// refused (it has no moments to train on).
Checkpoint load_checkpoint(const std::filesystem::path& file, const ModelConfig* expect = nullptr,
                           bool with_optimizer = true);
// One state vector ("params", "adam_m" or "adam_v") of a checkpoint of the shape `expect`, with
// the checks of load_checkpoint: for streaming over many checkpoints.
std::vector<float> load_state_vector(const std::filesystem::path& file, const std::string& name,
                                     const ModelConfig& expect);
// Attributes only (no arrays): cheap, for planning and listing.
CheckpointInfo peek_checkpoint(const std::filesystem::path& file);
// peek_checkpoint for every rank of `group`: its rank 0 reads, the group receives.
CheckpointInfo peek_checkpoint_in_group(MpiComm& group, const std::filesystem::path& file);
// load_checkpoint for every rank of `group`, read once: its rank 0 reads the file and the group
// receives it (a 1.3B model's state is 21 GB: one reader per group, not one per rank). Errors
// reach every rank (collective_check).
Checkpoint load_checkpoint_in_group(MpiComm& group, const std::filesystem::path& file,
                                    const ModelConfig* expect = nullptr,
                                    bool with_optimizer = true);
// Rank 0's `c` (its attributes, params, and with_optimizer the moments) to every rank of
// `group`.
void broadcast_checkpoint(MpiComm& group, Checkpoint& c, bool with_optimizer = true);

}  // namespace btm

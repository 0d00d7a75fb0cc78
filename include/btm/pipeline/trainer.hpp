// trainer.hpp: the training loop of one model by one group of ranks (data parallel inside the
// group, nothing outside it). The model's whole state lives in its checkpoint file
// RUN/elms/NAME.h5: the loop starts from it, writes it every run.checkpoint_every steps, at the
// end, and when a stop is requested; so a rerun continues where the last one stopped.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "btm/data/corpus.hpp"
#include "btm/dist/comm.hpp"
#include "btm/io/checkpoint.hpp"
#include "btm/model/engine.hpp"
#include "btm/pipeline/run_context.hpp"

namespace btm {

enum class TrainResult { Finished, Stopped };

// Throws InputError naming `file` unless `ranks` ranks can continue the unfinished checkpoint
// `c` bit-exactly: it records its global batch, data.batch equals its micro-batch and ranks
// divides its micro-batches (budget.hpp). Finished checkpoints pass.
void check_trainable(const CheckpointInfo& c, const std::filesystem::path& file, int ranks,
                     int data_batch);

// Throws InputError naming `file` and `corpus_file` unless the model of checkpoint `c` reads the
// ids of that corpus: the same vocabulary size, and where the checkpoint records a tokenizer
// (format 3), the same tokenizer and vocab_hash.
void check_vocabulary(const CheckpointInfo& c, const std::filesystem::path& file,
                      const CorpusInfo& corpus, const std::filesystem::path& corpus_file);

// Trains model `name` from its checkpoint to the checkpoint's target_steps, starting from the
// state ctx.engine keeps where the checkpoint refers to it (a branch of the seed this process
// trained), and adding its time in training steps to ctx.training_s. `group` is the MPI
// communicator of the ranks training it (control traffic and checkpoint agreement);
// `grads` averages gradients inside the group (nullptr for one rank). Only group rank 0 prints,
// writes the checkpoint and the metrics file, and prints the progress and validation lines
// (pipeline/progress.hpp); `later_elms`, the ELMs the group trains after this one, count in
// their ETA.
TrainResult train_model(RunContext& ctx, MpiComm& group, Engine& engine, Communicator* grads,
                        const std::string& name, const std::vector<std::string>& later_elms = {});

}  // namespace btm

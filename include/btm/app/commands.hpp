// commands.hpp: the btm subcommands. Each takes its arguments (without the command name), the
// world communicator and the backends of the build (backends.hpp), returns the process exit
// code, and throws InputError on bad input.
#pragma once

#include <string>
#include <vector>

#include "btm/dist/comm.hpp"
#include "btm/model/backend.hpp"

namespace btm {

using Args = std::vector<std::string>;

int cmd_prepare(const Args& args, MpiComm& world,
                const Backends& backends);  // text -> per-domain HDF5 corpora
int cmd_cluster(const Args& args, MpiComm& world,
                const Backends& backends);  // c-BTM: fit clusters.h5 on an unlabelled corpus
int cmd_layout(const Args& args, MpiComm& world, const Backends& backends);  // the rank plan
int cmd_config(const Args& args, MpiComm& world, const Backends& backends);  // the settings
int cmd_run(const Args& args, MpiComm& world, const Backends& backends);     // the whole pipeline
int cmd_seed(const Args& args, MpiComm& world, const Backends& backends);
int cmd_branch(const Args& args, MpiComm& world, const Backends& backends);
int cmd_train(const Args& args, MpiComm& world, const Backends& backends);
int cmd_dense(const Args& args, MpiComm& world, const Backends& backends);
int cmd_eval(const Args& args, MpiComm& world, const Backends& backends);
int cmd_average(const Args& args, MpiComm& world, const Backends& backends);
int cmd_forest(const Args& args, MpiComm& world, const Backends& backends);  // list | add | remove
int cmd_verify(const Args& args, MpiComm& world, const Backends& backends);  // every file sound?
int cmd_bench(const Args& args, MpiComm& world, const Backends& backends);
int cmd_encode(const Args& args, MpiComm& world,
               const Backends& backends);  // tokenize a string (debugging)
int cmd_logits(const Args& args, MpiComm& world,
               const Backends& backends);  // a checkpoint's logits on given tokens
int cmd_export(const Args& args, MpiComm& world,
               const Backends& backends);  // a model as a Hugging Face directory
int cmd_import(const Args& args, MpiComm& world,
               const Backends& backends);  // a Hugging Face GPT-2 as a checkpoint
int cmd_generate(const Args& args, MpiComm& world,
                 const Backends& backends);  // sample text from a model, average or ensemble

}  // namespace btm

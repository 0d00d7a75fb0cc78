// commands.hpp: the btm subcommands. Each takes its arguments (without the command name) and
// the world communicator, returns the process exit code, and throws InputError on bad input.
#pragma once

#include <string>
#include <vector>

#include "btm/comm.hpp"

namespace btm {

using Args = std::vector<std::string>;

int cmd_prepare(const Args& args, MpiComm& world);  // text -> per-domain HDF5 corpora
int cmd_layout(const Args& args, MpiComm& world);   // print the rank layout plan
int cmd_run(const Args& args, MpiComm& world);      // the whole pipeline
int cmd_seed(const Args& args, MpiComm& world);
int cmd_branch(const Args& args, MpiComm& world);
int cmd_train(const Args& args, MpiComm& world);
int cmd_dense(const Args& args, MpiComm& world);
int cmd_eval(const Args& args, MpiComm& world);
int cmd_average(const Args& args, MpiComm& world);
int cmd_forest(const Args& args, MpiComm& world);  // list | add | remove
int cmd_bench(const Args& args, MpiComm& world);
int cmd_encode(const Args& args, MpiComm& world);  // tokenize a string (debugging)
int cmd_logits(const Args& args, MpiComm& world);  // a checkpoint's logits on given tokens

}  // namespace btm

// command_context.hpp: what the pipeline commands (app/*_command.cpp) share: the run context
// made and checked before any work, the step-limit option, the stop exit, the printed plan,
// and the parsing of --parents / --weights.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "btm/app/cli.hpp"
#include "btm/io/forest.hpp"
#include "btm/method/budget.hpp"
#include "btm/method/rank_layout.hpp"
#include "btm/pipeline/preflight.hpp"
#include "btm/pipeline/run_context.hpp"

namespace btm {

// --parents "a,b,c", or every trained ELM of the forest when it is not given.
std::vector<std::string> parents_or_trained_elms(const std::string& text, const Forest& forest,
                                                 const std::filesystem::path& run_dir,
                                                 const std::string& purpose);
// --weights "0.5,0.3,0.2" for `parents` ELMs: numbers, one per parent, normalised to sum 1.
std::vector<double> parse_parent_weights(const std::string& text, std::size_t parents);
// --max-steps-per-run, accepted by every training command.
po::options_description step_limit_option(std::int64_t& limit);
// The run context of a command that reads or writes a forest, checked before any work: the
// corpora exist and fit the model, the preflight checks of `plan` pass, rank 0 holds the run
// directory's lock (one writer at a time; stale temporary files removed), and the manifest is
// usable.
RunContext prepare_context(const std::string& command, const Config& config, MpiComm& world,
                           const Backends& backends, std::int64_t max_steps_per_run,
                           const PreflightPlan& plan);
// The run's plan: the compute budget per phase and which group trains which ELM when.
std::string describe_plan(const Budget& budget, const RankLayout& layout);
// Says how to continue after a stop (signal or --max-steps-per-run); returns exit code 75.
int stopped_exit(const RunContext& ctx);

}  // namespace btm

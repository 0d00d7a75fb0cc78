// cli.hpp: command-line and config-file parsing with Boost.Program_options. Every command
// takes flags and (where it needs a Config) INI files with sections [model] [optim] [data]
// [run] [eval]; a flag such as --model.d_model overrides the file. Unknown options, bad values
// and missing files are InputErrors (exit code 2).
#pragma once

#include <boost/program_options.hpp>
#include <string>
#include <vector>

#include "btm/config/config.hpp"
#include "btm/data/readers.hpp"

namespace btm {

namespace po = boost::program_options;

// Thrown after --help text was printed: the command exits 0.
struct HelpShown {};

// The options that fill a Config, named section.key (as in the INI file), one per entry of the
// field table of config.hpp, grouped by section.
po::options_description config_options(Config& config);

// How prepare and cluster read documents: --text-key, --split-lines, --split-blank-lines.
po::options_description reader_options(ReaderOptions& reader);
// --split-lines 0 given on the command line (0 is "not cutting" inside): InputError.
void check_reader_flags(const po::variables_map& vm, const ReaderOptions& reader);

// Parses `args` (without the command name). `command_options` are the command's own flags.
// If `config` is not null the config options and --config FILE (repeatable, later files win)
// are accepted, and the result is validated. Prints help (and throws HelpShown) on --help.
// With reads_forest, where run.dir holds a forest the config its forest.h5 records comes
// under the flags and files (flags > --config files > the forest's config > defaults), and a
// model shape other than that of the forest's models is refused, naming both values.
po::variables_map parse_command(const std::string& command, const std::string& summary,
                                const std::vector<std::string>& args,
                                const po::options_description& command_options, Config* config,
                                bool print_help, bool reads_forest = true);

// The Config that INI text (a forest's or a checkpoint's recorded config) describes; InputError
// naming `where` if it does not parse.
Config config_from_ini(const std::string& text, const std::string& where);

}  // namespace btm

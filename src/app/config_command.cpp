// btm config: the configuration a command would run with (INI files, then flags), as INI text,
// or one setting's value (--get section.key): what job scripts read instead of parsing INI.
#include <iostream>

#include "btm/app/cli.hpp"
#include "btm/app/commands.hpp"
#include "btm/util/error.hpp"

namespace btm {

int cmd_config(const Args& args, MpiComm& world, const Backends&) {
  Config config;
  std::string key;
  po::options_description options("Options");
  // clang-format off
  options.add_options()("get", po::value(&key), "print only this setting's value (section.key)");
  // clang-format on
  parse_command(
      "config",
      "Print the configuration the given files and flags make (INI text), or one "
      "setting's value with --get, e.g. btm config --config inputs/tiny.cfg --get run.dir",
      args, options, &config, world.rank() == 0);
  if (world.rank() != 0) return kExitOk;
  if (key.empty())
    std::cout << to_ini(config);
  else
    std::cout << get_field(config, key) << "\n";
  return kExitOk;
}

}  // namespace btm

// btm config: the configuration a command would run with (INI files, then flags), as INI text,
// or one setting's value (--get section.key): what job scripts read instead of parsing INI; and
// the glossary of every setting (--list), which docs/config.md is a copy of.
#include <iostream>
#include <string>

#include "btm/app/cli.hpp"
#include "btm/app/commands.hpp"
#include "btm/util/error.hpp"

namespace btm {

namespace {

// A markdown table cell: '|' would end it.
std::string cell(const std::string& text) {
  std::string out;
  for (char c : text) out += c == '|' ? std::string("\\|") : std::string(1, c);
  return out;
}

// Markdown: an introduction, then one table per section, from the field table.
void print_glossary(std::ostream& out) {
  out << "# btm settings\n\n"
         "Every setting of a run, from the field table of `include/btm/config/config.hpp`\n"
         "(this page is the output of `btm config --list`; a test keeps the two equal). A setting\n"
         "is a key of an INI section of a `--config` file (`[data]` then `batch = 8`) or a flag\n"
         "(`--data.batch 8`). Flags override files; of several `--config` files the later wins.\n"
         "`btm config --config FILE` prints the settings a command would run with.\n\n"
         "**`data.batch` is per rank.** An ELM's optimizer step is `run.ranks_per_elm` x\n"
         "`data.accum` micro-batches of `data.batch` sequences of `model.context` tokens; the\n"
         "seed's and the dense baseline's step is K (the number of train domains) times that,\n"
         "formed by accumulation on the ranks there are. `btm layout` prints the plan.\n";
  std::string section;
  for (const FieldDoc& f : field_docs()) {
    const std::string s = f.name.substr(0, f.name.find('.'));
    if (s != section) {
      section = s;
      out << "\n## [" << s << "]\n\n| key | type | default | range | meaning |\n"
          << "|---|---|---|---|---|\n";
    }
    out << "| `" << f.name << "` | " << cell(f.type) << " | "
        << (f.value.empty() ? "(empty)" : "`" + cell(f.value) + "`") << " | "
        << (f.range.empty() ? "-" : cell(f.range)) << " | " << cell(f.help) << " |\n";
  }
}

}  // namespace

int cmd_config(const Args& args, MpiComm& world, const Backends&) {
  Config config;
  std::string key;
  bool list = false;
  po::options_description options("Options");
  // clang-format off
  options.add_options()
      ("get", po::value(&key), "print only this setting's value (section.key)")
      ("list", po::bool_switch(&list),
       "print every setting (type, default, range, meaning) as markdown: docs/config.md");
  // clang-format on
  parse_command(
      "config",
      "Print the configuration the given files and flags make (INI text), or one "
      "setting's value with --get, e.g. btm config --config inputs/tiny.cfg --get run.dir, or "
      "the glossary of every setting with --list",
      args, options, &config, world.rank() == 0);
  if (list && !key.empty()) throw InputError("btm config: give --get or --list, not both");
  if (world.rank() != 0) return kExitOk;
  if (list)
    print_glossary(std::cout);
  else if (key.empty())
    std::cout << to_ini(config);
  else
    std::cout << get_field(config, key) << "\n";
  return kExitOk;
}

}  // namespace btm

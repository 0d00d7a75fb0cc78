#include "btm/app/cli.hpp"

#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <sstream>

#include "btm/io/forest.hpp"
#include "btm/util/error.hpp"

namespace btm {

namespace fs = std::filesystem;

po::options_description reader_options(ReaderOptions& reader) {
  po::options_description options("Reading documents");
  // clang-format off
  options.add_options()
      ("text-key", po::value(&reader.text_key)->default_value(reader.text_key),
       "the member of each JSON line that holds its text")
      ("split-lines", po::value(&reader.split_lines),
       "cut each .txt file into documents of N lines (the last may be shorter), so that one "
       "large file can be split into train/valid/test")
      ("split-blank-lines", po::bool_switch(&reader.split_blank_lines),
       "cut each .txt file into documents at blank lines (paragraphs)");
  // clang-format on
  return options;
}

void check_reader_flags(const po::variables_map& vm, const ReaderOptions& reader) {
  if (vm.count("split-lines") && reader.split_lines == 0)
    throw InputError("--split-lines 0: give the number of lines per document (>= 1)");
}

po::options_description config_options(Config& c) {
  po::options_description all(
      "Configuration (INI sections [model] [optim] [data] [run] [eval]; "
      "a flag --section.key overrides the file)");
  std::vector<std::pair<std::string, po::options_description>> sections;
  for_each_field(c, [&](const std::string& name, auto& value, const Limits&, const char* help) {
    const std::string section = name.substr(0, name.find('.'));
    if (sections.empty() || sections.back().first != section)
      sections.emplace_back(section, po::options_description("[" + section + "]"));
    auto* semantic = po::value<std::string>()->notifier(
        [&value, name](const std::string& text) { parse_field(text, value, name); });
    const std::string shown = field_text(value);
    if (!shown.empty()) semantic->default_value(shown);
    sections.back().second.add_options()(name.c_str(), semantic, help);
  });
  for (auto& [name, options] : sections) all.add(options);
  return all;
}

namespace {

// The config forest.h5 of run.dir records, stored under what flags and --config files gave
// (po::store keeps the values it already holds), so a command on an existing run needs no
// --config. run.dir itself stays where the forest was found. Nothing when there is no forest
// (or it records no config) there.
std::optional<Config> store_forest_config(const std::string& command, po::variables_map& vm,
                                          const po::options_description& config_desc) {
  const fs::path dir = vm.count("run.dir") ? vm["run.dir"].as<std::string>() : std::string();
  if (dir.empty() || !fs::exists(forest_file(dir))) return std::nullopt;
  const Forest forest = load_forest(dir);  // refuses a damaged manifest, naming it
  if (forest.config_ini.empty()) return std::nullopt;
  const std::string where = forest_file(dir).string();
  std::istringstream in(forest.config_ini);
  try {
    po::parsed_options parsed = po::parse_config_file(in, config_desc, false);
    std::erase_if(parsed.options, [](const po::option& o) { return o.string_key == "run.dir"; });
    po::store(parsed, vm);
  } catch (const po::error& e) {
    throw InputError("btm " + command + ": " + where + ": its recorded config does not parse (" +
                     e.what() + ")");
  }
  if (forest.models.empty()) return std::nullopt;  // nothing trained to contradict yet
  return config_from_ini(forest.config_ini, where);
}

// A forest's models share the shape its config records (their parameters are averaged): a
// setting that gives another is refused, naming both values.
void check_forest_shape(const std::string& command, const Config& config,
                        const ModelConfig& recorded, const fs::path& dir) {
  std::map<std::string, int> stored;
  for_each_model_field(recorded, [&](const char* key, int value) { stored[key] = value; });
  std::string differ;
  for_each_model_field(config.model, [&](const char* key, int value) {
    if (value != stored[key])
      differ += std::string(differ.empty() ? "" : ", ") + "model." + key + " = " +
                std::to_string(value) + " (given) differs from the forest's " +
                std::to_string(stored[key]) + " (forest.h5)";
  });
  if (!differ.empty())
    throw InputError("btm " + command + ": " + differ + ": the models of the forest in " +
                     dir.string() + " have that shape (" + describe_model(recorded) +
                     "); leave the model settings out (the forest's are used), or give another "
                     "run.dir for a new forest");
}

}  // namespace

po::variables_map parse_command(const std::string& command, const std::string& summary,
                                const std::vector<std::string>& args,
                                const po::options_description& command_options, Config* config,
                                bool print_help, bool reads_forest) {
  po::options_description generic("General");
  // clang-format off
  generic.add_options()("help,h", "print this help");
  // clang-format on
  po::options_description visible;
  visible.add(generic).add(command_options);
  std::unique_ptr<po::options_description> config_desc;
  if (config) {
    // clang-format off
    visible.add_options()("config,c", po::value<std::vector<std::string>>()->composing(),
                          "INI config file (repeatable; later files win)");
    // clang-format on
    config_desc = std::make_unique<po::options_description>(config_options(*config));
    visible.add(*config_desc);
  }

  po::variables_map vm;
  try {
    po::store(po::command_line_parser(args).options(visible).run(), vm);
  } catch (const po::error& e) {
    throw InputError("btm " + command + ": " + e.what() + " (btm " + command +
                     " --help lists the options)");
  }
  if (vm.count("help")) {
    if (print_help)
      std::cout << "usage: btm " << command << " [options]\n\n"
                << summary << "\n\n"
                << visible << "\n";
    throw HelpShown{};
  }
  if (config && vm.count("config")) {
    // po::store keeps values already stored, so flags win over files; later files win over
    // earlier ones by storing them first.
    std::vector<std::string> files = vm["config"].as<std::vector<std::string>>();
    for (auto it = files.rbegin(); it != files.rend(); ++it) {
      std::ifstream in(*it);
      if (!fs::is_regular_file(*it) || !in)
        throw InputError("btm " + command + ": config file '" + *it + "' not found or unreadable");
      try {
        po::store(po::parse_config_file(in, *config_desc, false), vm);
      } catch (const po::error& e) {
        throw InputError("btm " + command + ": config file '" + *it + "': " + e.what());
      }
    }
  }
  std::optional<Config> recorded;
  if (config && reads_forest) recorded = store_forest_config(command, vm, *config_desc);
  try {
    po::notify(vm);
  } catch (const po::error& e) {
    throw InputError("btm " + command + ": " + e.what());
  }
  if (config) validate(*config);
  if (recorded) check_forest_shape(command, *config, recorded->model, config->run.dir);
  return vm;
}

Config config_from_ini(const std::string& text, const std::string& where) {
  Config config;
  po::options_description options = config_options(config);
  po::variables_map vm;
  std::istringstream in(text);
  try {
    po::store(po::parse_config_file(in, options, false), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    throw InputError(where + ": its recorded config does not parse (" + e.what() + ")");
  }
  return config;
}

}  // namespace btm

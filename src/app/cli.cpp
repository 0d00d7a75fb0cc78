#include "btm/app/cli.hpp"

#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "btm/util/error.hpp"

namespace btm {

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

po::variables_map parse_command(const std::string& command, const std::string& summary,
                                const std::vector<std::string>& args,
                                const po::options_description& command_options, Config* config,
                                bool print_help) {
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
      if (!std::filesystem::is_regular_file(*it) || !in)
        throw InputError("btm " + command + ": config file '" + *it + "' not found or unreadable");
      try {
        po::store(po::parse_config_file(in, *config_desc, false), vm);
      } catch (const po::error& e) {
        throw InputError("btm " + command + ": config file '" + *it + "': " + e.what());
      }
    }
  }
  try {
    po::notify(vm);
  } catch (const po::error& e) {
    throw InputError("btm " + command + ": " + e.what());
  }
  if (config) validate(*config);
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

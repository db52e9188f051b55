// SPDX-License-Identifier: Apache-2.0
#include "cli.h"

#include <charconv>
#include <cstdio>
#include <sstream>

#include "samoyeds/device.h"
#include "samoyeds/moe.h"

namespace samoyeds::cli {

namespace {
const Option* find_option(const Command& command, const std::string& name) {
  for (const Option& option : command.options)
    if (option.name == name) return &option;
  return nullptr;
}

std::string option_list(const Command& command) {
  std::string names;
  for (const Option& option : command.options) names += (names.empty() ? "--" : ", --") + option.name;
  return names.empty() ? "(none)" : names;
}
}  // namespace

std::string Args::get(const std::string& name) const {
  if (auto it = values_.find(name); it != values_.end()) return it->second;
  if (auto it = defaults_.find(name); it != defaults_.end()) return it->second;
  return "";
}

std::int64_t Args::get_int(const std::string& name) const {
  const std::string text = get(name);
  std::int64_t value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc() || end != text.data() + text.size() || text.empty())
    throw UsageError{"--" + name + " needs a whole number, got '" + text + "'"};
  return value;
}

std::vector<std::int64_t> Args::get_int_list(const std::string& name) const {
  std::vector<std::int64_t> out;
  std::stringstream stream(get(name));
  std::string item;
  while (std::getline(stream, item, ',')) {
    std::int64_t value = 0;
    const auto [end, error] = std::from_chars(item.data(), item.data() + item.size(), value);
    if (error != std::errc() || end != item.data() + item.size() || item.empty())
      throw UsageError{"--" + name + " needs a comma-separated list of whole numbers, got '" + get(name) + "'"};
    out.push_back(value);
  }
  return out;
}

Args parse(const Command& command, const std::vector<std::string>& argv) {
  Args args;
  for (const Option& option : command.options)
    if (!option.default_value.empty()) args.defaults_[option.name] = option.default_value;
  for (std::size_t i = 0; i < argv.size(); ++i) {
    const std::string& word = argv[i];
    if (!command.positional.empty() && word.rfind("--", 0) != 0) {
      args.positional_.push_back(word);
      continue;
    }
    if (word.rfind("--", 0) != 0 || word.size() == 2)
      throw UsageError{"unexpected argument '" + word + "'; options of '" + command.name + "': " + option_list(command)};
    std::string name = word.substr(2), value;
    const bool inline_value = name.find('=') != std::string::npos;
    if (inline_value) {
      value = name.substr(name.find('=') + 1);
      name = name.substr(0, name.find('='));
    }
    const Option* option = find_option(command, name);
    if (!option) throw UsageError{"unknown option '--" + name + "' for '" + command.name + "'; options: " + option_list(command)};
    if (option->value_name.empty()) {
      if (inline_value) throw UsageError{"--" + name + " is a flag and takes no value"};
    } else if (!inline_value) {
      if (i + 1 >= argv.size()) throw UsageError{"--" + name + " needs a value (" + option->value_name + ")"};
      value = argv[++i];
    }
    args.values_[name] = value;
  }
  return args;
}

std::string usage(const Command& command) {
  std::ostringstream out;
  out << "usage: samoyeds " << command.name << (command.positional.empty() ? "" : " " + command.positional)
      << (command.options.empty() ? "" : " [options]") << "\n\n"
      << command.description << "\n";
  if (!command.options.empty()) out << "\noptions:\n";
  for (const Option& option : command.options) {
    std::string left = "  --" + option.name + (option.value_name.empty() ? "" : " " + option.value_name);
    if (left.size() < 28) left.resize(28, ' ');
    out << left << " " << option.help;
    if (!option.default_value.empty()) out << " (default: " << option.default_value << ")";
    out << "\n";
  }
  out << "  --help                       show this help\n";
  return out.str();
}

bool device_is_gpu(const Args& args) {
  const std::string device = args.get("device");
  if (device != "auto" && device != "gpu" && device != "cpu") throw UsageError{"--device must be auto, gpu or cpu"};
  const bool have_gpu = device != "cpu" && !cuda_devices().empty();
  if (device == "gpu" && !have_gpu) SAMOYEDS_FAIL("--device gpu: no usable GPU (", cuda_status(), ")");
  return device == "gpu" || (device == "auto" && have_gpu);
}

ModelConfig model_from_args(const Args& args) {
  ModelConfig config = find_model(args.get("model"));
  if (args.has("scale")) {
    const std::vector<std::int64_t> hi = args.get_int_list("scale");
    if (hi.size() != 2) throw UsageError{"--scale takes H,I (e.g. 256,512)"};
    config = scaled_config(config, hi[0], hi[1]);
  }
  return config;
}

std::string format_bytes(double bytes) {
  const char* units[] = {"B", "KB", "MB", "GB", "TB"};
  int unit = 0;
  while (bytes >= 1000.0 && unit < 4) {
    bytes /= 1000.0;
    ++unit;
  }
  char text[32];
  std::snprintf(text, sizeof text, unit == 0 ? "%.0f %s" : "%.2f %s", bytes, units[unit]);
  return text;
}

}  // namespace samoyeds::cli

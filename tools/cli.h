// SPDX-License-Identifier: Apache-2.0
// The samoyeds command line: a command table, an option parser with clear usage errors, and the
// small text helpers the commands share.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "samoyeds/model_config.h"

namespace samoyeds::cli {

struct Option {
  std::string name;           // without the leading "--"
  std::string value_name;     // empty for a flag
  std::string help;
  std::string default_value;  // shown in --help; "" means none
};

class Args {
 public:
  bool has(const std::string& name) const { return values_.count(name) != 0; }
  bool flag(const std::string& name) const { return has(name); }
  std::string get(const std::string& name) const;           // value or the option's default
  std::int64_t get_int(const std::string& name) const;      // integer value; errors name the option
  std::vector<std::int64_t> get_int_list(const std::string& name) const;  // "1,16,128"
  const std::vector<std::string>& positional() const { return positional_; }

 private:
  friend Args parse(const struct Command&, const std::vector<std::string>&);
  std::map<std::string, std::string> values_;
  std::map<std::string, std::string> defaults_;
  std::vector<std::string> positional_;
};

struct Command {
  std::string name;
  std::string summary;                 // one line for the command list
  std::string description;             // paragraph for --help
  std::vector<Option> options;
  std::function<int(const Args&)> run;
  std::string positional;  // e.g. "kernel|moe": words without "--" allowed (and required) when set
};

// Thrown for bad command lines; main prints the message and the command's usage hint, exit code 2.
struct UsageError {
  std::string message;
};

Args parse(const Command& command, const std::vector<std::string>& argv);
std::string usage(const Command& command);  // full --help text

// Commands (one file each).
Command info_command();
Command demo_command();
Command models_command();
Command bench_command();
Command convert_command();
Command moe_command();
Command run_command();
Command maxbatch_command();
Command synth_command();

// --device auto|gpu|cpu: whether to run on the GPU (auto: when there is one). --device cpu never
// initialises CUDA; --device gpu without a usable GPU throws.
bool device_is_gpu(const Args& args);

// find_model(--model), resized by --scale H,I when given (scaled_config).
ModelConfig model_from_args(const Args& args);

// "117.44 MB", "28.67 KB" (powers of 1000, as storage sizes are quoted).
std::string format_bytes(double bytes);

}  // namespace samoyeds::cli

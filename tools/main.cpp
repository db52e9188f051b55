// SPDX-License-Identifier: Apache-2.0
// samoyeds: the one command-line program. `samoyeds <command> --help` explains each command.
#include <cstdio>
#include <string>
#include <vector>

#include "cli.h"
#include "samoyeds/error.h"

namespace {

using samoyeds::cli::Command;

std::vector<Command> commands() {
  return {samoyeds::cli::demo_command(), samoyeds::cli::info_command(), samoyeds::cli::models_command(),
          samoyeds::cli::bench_command(), samoyeds::cli::convert_command(),
          samoyeds::cli::moe_command(), samoyeds::cli::run_command(), samoyeds::cli::maxbatch_command(),
          samoyeds::cli::synth_command()};
}

void print_overview(std::FILE* out) {
  std::fprintf(out,
               "samoyeds: dual-side sparse Mixture-of-Experts inference on NVIDIA sparse tensor cores\n\n"
               "usage: samoyeds <command> [options]\n\ncommands:\n");
  for (const Command& command : commands()) std::fprintf(out, "  %-10s %s\n", command.name.c_str(), command.summary.c_str());
  std::fprintf(out, "\n`samoyeds <command> --help` shows a command's options.\n");
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> words(argv + 1, argv + argc);
  if (words.empty() || words[0] == "--help" || words[0] == "-h" || words[0] == "help") {
    print_overview(stdout);
    return words.empty() ? 2 : 0;
  }
  for (const Command& command : commands()) {
    if (command.name != words[0]) continue;
    const std::vector<std::string> rest(words.begin() + 1, words.end());
    for (const std::string& word : rest) {
      if (word == "--help" || word == "-h") {
        std::fputs(samoyeds::cli::usage(command).c_str(), stdout);
        return 0;
      }
    }
    try {
      return command.run(samoyeds::cli::parse(command, rest));
    } catch (const samoyeds::cli::UsageError& e) {
      std::fprintf(stderr, "samoyeds %s: %s\n(see `samoyeds %s --help`)\n", command.name.c_str(), e.message.c_str(),
                   command.name.c_str());
      return 2;
    } catch (const samoyeds::Error& e) {
      std::fprintf(stderr, "samoyeds %s: error: %s\n", command.name.c_str(), e.message().c_str());
      return 1;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "samoyeds %s: error: %s\n", command.name.c_str(), e.what());
      return 1;
    }
  }
  std::string names;
  for (const Command& command : commands()) names += (names.empty() ? "" : ", ") + command.name;
  std::fprintf(stderr, "samoyeds: unknown command '%s'; commands: %s (see `samoyeds --help`)\n", words[0].c_str(),
               names.c_str());
  return 2;
}

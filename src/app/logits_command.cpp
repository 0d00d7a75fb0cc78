// btm logits: run a checkpoint on given token ids and write its logits and per-token
// log-probabilities to HDF5 (used by tools/compare_hf.py to check the architecture).
#include <iostream>

#include "btm/app/cli.hpp"
#include "btm/app/commands.hpp"
#include "btm/io/checkpoint.hpp"
#include "btm/io/h5.hpp"
#include "btm/model/engine.hpp"
#include "btm/util/error.hpp"

namespace btm {

int cmd_logits(const Args& args, MpiComm& world, const Backends& backends) {
  std::string checkpoint, tokens_text, out;
  Device device = Device::cpu;
  po::options_description options("Options");
  // clang-format off
  options.add_options()
      ("checkpoint", po::value(&checkpoint)->required(), "a btm checkpoint (.h5)")
      ("tokens", po::value(&tokens_text)->required(),
       "comma-separated token ids: B sequences of T+1 ids, sequences separated by ';'")
      ("out", po::value(&out)->required(), "output HDF5 file: /logits [B*T, Vp], /logprobs [B*T]")
      ("device", po::value<std::string>()->default_value("cpu")->notifier(
           [&](const std::string& s) { parse_field(s, device, "device"); }),
       "cpu | cuda | auto");
  // clang-format on
  parse_command("logits", "Write a checkpoint's logits and log-probabilities on the given tokens.",
                args, options, nullptr, world.rank() == 0);
  if (world.rank() != 0) return kExitOk;
  const Checkpoint c = load_checkpoint(checkpoint, nullptr, false);
  std::vector<std::vector<int>> rows;
  for (const std::string& row : split_list([&] {
         std::string t = tokens_text;
         for (char& ch : t) ch = ch == ';' ? ',' : ch == ',' ? ' ' : ch;
         return t;
       }())) {
    std::vector<int> ids;
    std::size_t pos = 0;
    while (pos < row.size()) {
      std::size_t used = 0;
      try {
        ids.push_back(std::stoi(row.substr(pos), &used));
      } catch (const std::exception&) {
        throw InputError("--tokens: '" + row + "' is not a list of integers");
      }
      pos += used;
      while (pos < row.size() && row[pos] == ' ') ++pos;
    }
    rows.push_back(ids);
  }
  if (rows.empty()) throw InputError("--tokens is empty");
  const int T = static_cast<int>(rows[0].size()) - 1;
  const int B = static_cast<int>(rows.size());
  if (T < 1 || T > c.model.context)
    throw InputError("--tokens: each sequence needs 2 to context + 1 = " +
                     std::to_string(c.model.context + 1) + " ids");
  std::vector<std::int32_t> inputs, targets;
  for (const auto& r : rows) {
    if (static_cast<int>(r.size()) != T + 1)
      throw InputError("--tokens: sequences differ in length");
    for (int t = 0; t <= T; ++t)
      if (r[static_cast<std::size_t>(t)] < 0 ||
          r[static_cast<std::size_t>(t)] >= c.model.vocab_size)
        throw InputError("--tokens: id " + std::to_string(r[static_cast<std::size_t>(t)]) +
                         " is outside the vocabulary");
    inputs.insert(inputs.end(), r.begin(), r.end() - 1);
    targets.insert(targets.end(), r.begin() + 1, r.end());
  }
  EngineOptions o;
  o.threads = 0;
  o.max_batch = B;
  std::unique_ptr<Engine> engine = backends.resolve(device).make_engine(c.model, o);
  engine->set_params(c.params);
  const Batch batch{inputs.data(), targets.data(), B, T};
  const std::size_t Vp = static_cast<std::size_t>(c.model.padded_vocab());
  std::vector<float> logits(static_cast<std::size_t>(B) * T * Vp),
      logprobs(static_cast<std::size_t>(B) * T);
  engine->logits(batch, logits.data());
  engine->token_logprobs(batch, logprobs.data());
  h5::AtomicFile file(out);
  h5::write_matrix(file.root(), "logits", logits.data(), static_cast<std::size_t>(B) * T, Vp);
  h5::write_array(file.root(), "logprobs", logprobs.data(), logprobs.size());
  h5::write_array(file.root(), "inputs", inputs.data(), inputs.size());
  h5::write_array(file.root(), "targets", targets.data(), targets.size());
  h5::set_attr(file.root(), "vocab_size", static_cast<std::int64_t>(c.model.vocab_size));
  h5::set_attr(file.root(), "engine", engine->kind());
  file.commit();
  double loss = 0;
  for (float lp : logprobs) loss -= lp;
  std::cout << "loss " << loss / static_cast<double>(logprobs.size()) << " over " << logprobs.size()
            << " tokens (" << engine->kind() << ")\n";
  return kExitOk;
}

}  // namespace btm

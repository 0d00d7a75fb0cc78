#include "btm/data/hf_tokenizer.hpp"

#include <fstream>

#include <nlohmann/json.hpp>

#include "btm/data/tokenizer.hpp"
#include "btm/io/h5.hpp"
#include "btm/util/error.hpp"

namespace btm {

namespace fs = std::filesystem;

namespace {

void write_text(const fs::path& file, const std::string& text) {
  {
    std::ofstream out(file, std::ios::binary | std::ios::trunc);
    out << text;
    out.flush();
    if (!out) throw SystemError("cannot write " + file.string());
  }
  h5::fsync_path(file);
}

void copy_synced(const fs::path& from, const fs::path& to) {
  fs::copy_file(from, to, fs::copy_options::overwrite_existing);
  h5::fsync_path(to);
}

}  // namespace

void write_hf_gpt2_tokenizer(const fs::path& dir, const fs::path& bpe_dir, int context) {
  const fs::path source = gpt2_bpe_dir(bpe_dir);
  // The same build of GPT-2's files btm tokenizes with (a smoke check that they are the 50,257
  // ids: a different encoder.json would give the exported model another vocabulary).
  if (make_tokenizer("gpt2", source)->vocab_size() != 50257)
    throw InputError((source / "encoder.json").string() +
                     ": not GPT-2's vocabulary of 50,257 ids (tools/fetch-gpt2-bpe.sh)");
  copy_synced(source / "encoder.json", dir / "vocab.json");
  copy_synced(source / "vocab.bpe", dir / "merges.txt");
  const std::string eot = "<|endoftext|>";
  nlohmann::ordered_json special;
  special["bos_token"] = eot;
  special["eos_token"] = eot;
  special["unk_token"] = eot;
  nlohmann::ordered_json config;
  config["tokenizer_class"] = "GPT2Tokenizer";
  config["model_max_length"] = context;
  config["add_prefix_space"] = false;
  config["add_bos_token"] = false;
  config["errors"] = "replace";
  config["clean_up_tokenization_spaces"] = false;
  for (const auto& [key, value] : special.items()) config[key] = value;
  write_text(dir / "tokenizer_config.json", config.dump(2) + "\n");
  write_text(dir / "special_tokens_map.json", special.dump(2) + "\n");
}

}  // namespace btm

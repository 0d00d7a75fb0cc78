// hf_tokenizer.hpp: GPT-2's tokenizer as the files of a Hugging Face model directory, so that
// AutoTokenizer.from_pretrained(DIR) gives the ids btm's gpt2 tokenizer gives:
//   vocab.json               GPT-2's encoder.json (the same file under HF's name)
//   merges.txt               GPT-2's vocab.bpe (the same file under HF's name)
//   tokenizer_config.json    GPT2Tokenizer, model_max_length = the model's context,
//                            <|endoftext|> as bos, eos and unk, no prefix space
//   special_tokens_map.json  the same special tokens
#pragma once

#include <filesystem>

namespace btm {

// Writes the four files into `dir` (which exists), from GPT-2's BPE files in `bpe_dir` (empty:
// the default search path, tokenizer.hpp). InputError if they are missing.
void write_hf_gpt2_tokenizer(const std::filesystem::path& dir, const std::filesystem::path& bpe_dir,
                             int context);

}  // namespace btm

// random_split.cpp: the pseudo-domains of the random-split ablation.
#include <iostream>

#include "btm/data/corpus.hpp"
#include "btm/data/sampler.hpp"
#include "btm/pipeline/phase_support.hpp"
#include "btm/pipeline/phases.hpp"
#include "btm/util/rng.hpp"

namespace btm {

namespace fs = std::filesystem;

void make_random_split(RunContext& ctx) {
  const Config& config = ctx.config;
  const std::size_t K = config.data.domains.size();
  on_leader(ctx, [&] {
    const fs::path dir = ctx.run_dir / "corpus";
    bool complete = true;
    for (std::size_t k = 0; k < K; ++k)
      complete = complete && fs::exists(dir / ("random-" + std::to_string(k) + ".h5"));
    if (complete) return;
    std::vector<DomainCorpus> corpora;
    for (const std::string& d : config.data.domains)
      corpora.push_back(
          load_corpus(fs::path(config.data.corpus) / (d + ".h5"), config.model.vocab_size));
    std::vector<std::vector<std::uint16_t>> out(K * 3);
    std::vector<std::int64_t> docs(K * 3, 0);
    for (int s = 0; s < 3; ++s) {
      // All documents of all train domains, shuffled, dealt round robin into K equal parts.
      std::vector<std::pair<const TokenArray*, std::pair<std::size_t, std::size_t>>> all;
      for (const DomainCorpus& c : corpora)
        for (auto span : document_spans(c.splits[s], c.info.eot_token))
          all.push_back({&c.splits[s], span});
      if (all.empty()) continue;
      const Permutation order(
          all.size(), mix64(config.run.seed ^ 0x5EED5EEDull ^ static_cast<std::uint64_t>(s)));
      for (std::size_t i = 0; i < all.size(); ++i) {
        const auto& [tokens, span] = all[order(i)];
        std::vector<std::uint16_t>& dst = out[(i % K) * 3 + static_cast<std::size_t>(s)];
        dst.insert(dst.end(), tokens->data() + span.first, tokens->data() + span.second);
        ++docs[(i % K) * 3 + static_cast<std::size_t>(s)];
      }
    }
    for (std::size_t k = 0; k < K; ++k) {
      CorpusInfo info = corpora[0].info;
      info.domain = "random-" + std::to_string(k);
      info.source = "random split " + std::to_string(k) + " of " + std::to_string(K) +
                    " over the documents of the train domains";
      std::vector<std::uint16_t> splits[3];
      for (int s = 0; s < 3; ++s) {
        splits[s] = std::move(out[k * 3 + static_cast<std::size_t>(s)]);
        info.docs[s] = docs[k * 3 + static_cast<std::size_t>(s)];
        info.bytes[s] = 0;
      }
      write_corpus(dir / (info.domain + ".h5"), info, splits);
    }
    std::cout << "[split] " << K << " random pseudo-domains written to " << dir.string()
              << std::endl;
  });
}

}  // namespace btm

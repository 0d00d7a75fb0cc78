// Tests of the Python report tool: tools/make_fake_eval.py writes a synthetic run, then
// tools/report.py must turn it into report.md and three PNG plots, and refuse files that are not
// btm eval files with exit code 2. And the two sides of eval.h5's layout agree: the C++ reader
// (io/eval_file.hpp) reads what tools/btm_files.py writes, report.py reads what the C++ writer
// writes. Skipped where no python3 with h5py is installed.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "btm/io/eval_file.hpp"
#include "btm/io/h5.hpp"
#include "btm/util/error.hpp"
#include "test_util.hpp"

namespace btm {
namespace {

namespace fs = std::filesystem;

std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// Exit status of a shell command (-1 if it did not exit normally).
int run_shell(const std::string& command) {
  const int status = std::system(command.c_str());
  return status != -1 && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

fs::path source_dir() {
  const char* env = std::getenv("BTM_SOURCE_DIR");
  return env && *env ? fs::path(env) : fs::path(BTM_SOURCE_DIR);
}

// The first python3 that can import h5py and numpy: $BTM_PYTHON, python3 on PATH (which may be a
// pyenv without Debian's modules), then Debian's own /usr/bin/python3.
std::optional<std::string> find_python() {
  std::vector<std::string> candidates;
  if (const char* env = std::getenv("BTM_PYTHON"); env && *env) candidates.push_back(env);
  candidates.push_back("python3");
  candidates.push_back("/usr/bin/python3");
  for (const std::string& python : candidates) {
    if (run_shell(shell_quote(python) + " -c 'import h5py, numpy' >/dev/null 2>&1") == 0)
      return python;
  }
  return std::nullopt;
}

std::string read_text(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

bool is_nonempty_png(const fs::path& path) {
  if (!fs::exists(path) || fs::file_size(path) < 100) return false;
  std::ifstream in(path, std::ios::binary);
  char magic[8] = {};
  in.read(magic, 8);
  return std::string(magic, 8) == std::string("\x89PNG\r\n\x1a\n", 8);
}

class ReportTool : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto found = find_python();
    if (!found) GTEST_SKIP() << "no python3 with h5py and numpy (install python3-h5py)";
    python_ = *found;
    tools_ = source_dir() / "tools";
    ASSERT_TRUE(fs::exists(tools_ / "report.py")) << tools_;
  }

  // Runs a tool with arguments; stdout and stderr go to `log`.
  int tool(const std::string& script, const std::string& args, const fs::path& log) {
    return run_shell(shell_quote(python_) + " " + shell_quote((tools_ / script).string()) + " " +
                     args + " >" + shell_quote(log.string()) + " 2>&1");
  }

  std::string python_;
  fs::path tools_;
  test::TempDir dir_{"btm-report"};
};

TEST_F(ReportTool, WritesTableAndPlotsOfAFakeRun) {
  const fs::path run = dir_ / "run", log = dir_ / "log.txt";
  ASSERT_EQ(tool("make_fake_eval.py", shell_quote(run.string()) + " --dense", log), 0)
      << read_text(log);
  ASSERT_TRUE(fs::exists(run / "eval.h5"));
  ASSERT_TRUE(fs::exists(run / "metrics" / "seed.h5"));

  ASSERT_EQ(tool("report.py", shell_quote(run.string()), log), 0) << read_text(log);
  const fs::path out = run / "report";  // the default output directory
  const std::string md = read_text(out / "report.md");
  ASSERT_FALSE(md.empty());
  EXPECT_NE(md.find("| Method | In-domain mean | Out-of-domain mean | legal | code | covid † | "
                    "tweets † |"),
            std::string::npos)
      << md;
  for (const char* method : {"elm:legal", "elm:code", "ensemble:top-1", "ensemble:top-2",
                             "ensemble:uniform-mixture", "ensemble:uniform-prior",
                             "average:uniform", "average:cached-prior", "average:argmax", "dense"})
    EXPECT_NE(md.find("| " + std::string(method) + " |"), std::string::npos) << method << "\n"
                                                                             << md;
  EXPECT_NE(md.find("**"), std::string::npos) << "no best value in bold\n" << md;
  EXPECT_NE(md.find("| – |"), std::string::npos) << "the NaN entry is not shown as missing";
  for (const char* png : {"loss_vs_tokens.png", "ppl_vs_topk.png", "prior_heatmap.png"})
    EXPECT_TRUE(is_nonempty_png(out / png)) << png;
  // The metrics have their validation tables: the curves are validation perplexity.
  EXPECT_NE(md.find("![validation perplexity and training loss vs tokens](loss_vs_tokens.png)"),
            std::string::npos)
      << md;
  // The compute of the compared models from /compute, and the match check.
  EXPECT_NE(md.find("| dense | 200 | 8 | 1,638,400 |"), std::string::npos) << md;
  // Under the perplexity table: the compute-match facts, then the glossary of the rows there are.
  const std::size_t table = md.find("## Perplexity"), facts = md.find("**Compute match:**"),
                    methods = md.find("## Methods");
  ASSERT_NE(facts, std::string::npos) << md;
  ASSERT_NE(methods, std::string::npos) << md;
  EXPECT_LT(table, facts);
  EXPECT_LT(facts, methods);
  EXPECT_NE(md.find("every model path takes 200 optimizer steps: the seed 100 with a global batch "
                    "of 8 sequences, then each ELM 100 more with 4; the dense baseline 200 steps "
                    "with 8. Tokens trained: forest (seed + every ELM's own steps) 1,638,400, "
                    "dense 1,638,400 (equal)."),
            std::string::npos)
      << md;
  for (const char* term : {"**elm:D**", "**ensemble:top-k**", "**ensemble:uniform-mixture**",
                           "**ensemble:uniform-prior**", "**cached prior**", "**average:uniform**",
                           "**average:cached-prior**", "**average:argmax**", "**dense**"})
    EXPECT_NE(md.find("- " + std::string(term) + ": "), std::string::npos) << term;
  EXPECT_EQ(md.find("**merge:M:S**"), std::string::npos) << "a glossary entry for absent rows";

  // --out puts everything elsewhere.
  const fs::path other = dir_ / "elsewhere";
  ASSERT_EQ(
      tool("report.py", shell_quote(run.string()) + " --out " + shell_quote(other.string()), log),
      0)
      << read_text(log);
  EXPECT_NE(read_text(other / "report.md").find("| ensemble:top-2 |"), std::string::npos);
  EXPECT_TRUE(is_nonempty_png(other / "prior_heatmap.png"));
}

// --merge: rows of several eval files in one table, with the compute behind each row (a forest
// method: seed + ELMs; dense: its trajectory, which continues the seed).
TEST_F(ReportTool, MergesRowsOfSeveralEvalFiles) {
  const fs::path a = dir_ / "a", b = dir_ / "b", log = dir_ / "log.txt", table = dir_ / "t.md";
  ASSERT_EQ(tool("make_fake_eval.py", shell_quote(a.string()) + " --dense", log), 0);
  ASSERT_EQ(tool("make_fake_eval.py", shell_quote(b.string()) + " --seed 2", log), 0);
  const std::string rows =
      shell_quote("dense|" + (a / "eval.h5").string() + "|dense|dense wins") + " " +
      shell_quote("other top-1|" + (b / "eval.h5").string() + "|ensemble:top-1");
  ASSERT_EQ(tool("report.py", "--merge " + shell_quote(table.string()) + " " + rows, log), 0)
      << read_text(log);
  const std::string md = read_text(table);
  EXPECT_NE(md.find("| Row | In-domain mean | Out-of-domain mean | legal | code | covid † | "
                    "tweets † | Tokens | Steps per path | GPU-s (train) | Paper |"),
            std::string::npos)
      << md;
  // dense: 4 s of its own + the seed's 4 s; the forest: seed 4 s + 2 ELMs x 2 s.
  EXPECT_NE(md.find("| 1,638,400 | 200 | 8 | dense wins |"), std::string::npos) << md;
  EXPECT_NE(md.find("| other top-1 |"), std::string::npos) << md;
  // A method a file does not have is refused, naming the file.
  EXPECT_EQ(tool("report.py",
                 "--merge " + shell_quote(table.string()) + " " +
                     shell_quote("x|" + (b / "eval.h5").string() + "|dense"),
                 log),
            2);
  EXPECT_NE(read_text(log).find("no method 'dense'"), std::string::npos) << read_text(log);
}

// A run without held-out domains: no out-of-domain mean column (a mean over no domain), one
// panel in the top-k plot.
TEST_F(ReportTool, WithoutHeldOutDomainsThereIsNoOutOfDomainMean) {
  const fs::path run = dir_ / "run", log = dir_ / "log.txt";
  ASSERT_EQ(tool("make_fake_eval.py", shell_quote(run.string()) + " --heldout ''", log), 0)
      << read_text(log);
  ASSERT_EQ(tool("report.py", shell_quote(run.string()), log), 0) << read_text(log);
  const std::string md = read_text(run / "report" / "report.md");
  EXPECT_NE(md.find("| Method | In-domain mean | legal | code |"), std::string::npos) << md;
  EXPECT_EQ(md.find("Out-of-domain mean"), std::string::npos) << md;
  EXPECT_NE(md.find("Held-out domains (out-of-domain, †): none"), std::string::npos) << md;
  EXPECT_TRUE(is_nonempty_png(run / "report" / "ppl_vs_topk.png"));
}

TEST_F(ReportTool, RefusesFilesThatAreNotBtmEvalFiles) {
  const fs::path run = dir_ / "run", log = dir_ / "log.txt";
  ASSERT_EQ(tool("make_fake_eval.py", shell_quote(run.string()), log), 0) << read_text(log);

  // An HDF5 file of another btm format (a metrics file), named as an eval file.
  const fs::path fake_run = dir_ / "not-eval";
  fs::create_directories(fake_run);
  fs::copy_file(run / "metrics" / "seed.h5", fake_run / "eval.h5");
  EXPECT_EQ(tool("report.py", shell_quote(fake_run.string()), log), 2);
  EXPECT_NE(read_text(log).find("not a btm eval file"), std::string::npos) << read_text(log);
  EXPECT_FALSE(fs::exists(fake_run / "report" / "report.md"));

  // The same file given by path.
  EXPECT_EQ(tool("report.py", shell_quote((run / "metrics" / "seed.h5").string()), log), 2);

  // Not HDF5 at all.
  const fs::path text = dir_ / "text.h5";
  std::ofstream(text) << "not hdf5\n";
  EXPECT_EQ(tool("report.py", shell_quote(text.string()), log), 2);
  EXPECT_NE(read_text(log).find("not an HDF5 file"), std::string::npos) << read_text(log);

  // A run directory without eval.h5.
  EXPECT_EQ(tool("report.py", shell_quote((dir_ / "empty").string()), log), 2);
}

// The message of the InputError read_eval_file throws on `path` ("" if it reads it).
std::string read_error(const fs::path& path) {
  try {
    read_eval_file(path);
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

// The C++ reader reads the fake run's eval file (written by tools/btm_files.py); what the C++
// writer writes reads back the same and report.py renders it like the fake run itself.
TEST_F(ReportTool, CppAndPythonAgreeOnTheEvalFile) {
  const fs::path run = dir_ / "run", log = dir_ / "log.txt";
  ASSERT_EQ(tool("make_fake_eval.py", shell_quote(run.string()) + " --dense", log), 0)
      << read_text(log);
  const EvalResults fake = read_eval_file(run / "eval.h5");
  EXPECT_EQ(fake.format_version, kEvalFormatVersion);
  EXPECT_EQ(fake.elms, (std::vector<std::string>{"legal", "code"}));
  EXPECT_EQ(fake.domains, (std::vector<std::string>{"legal", "code", "covid", "tweets"}));
  EXPECT_EQ(fake.in_domain, (std::vector<double>{1, 1, 0, 0}));
  EXPECT_EQ(fake.posterior, "prefix");
  ASSERT_EQ(fake.methods.size(), 2u + 2u + 2u + 3u + 1u);
  EXPECT_EQ(fake.methods.back(), "dense");
  EXPECT_EQ(fake.perplexity.size(), fake.methods.size() * 4);
  EXPECT_EQ(fake.schemes, (std::vector<std::string>{"uniform", "cached-prior", "argmax"}));
  EXPECT_EQ(fake.average_weights.size(), 3u * 4u * 2u);
  EXPECT_EQ(fake.tokens, (std::vector<std::int64_t>(4, 4 * 1024)));
  ASSERT_TRUE(fake.compute);
  EXPECT_EQ(fake.compute->models, (std::vector<std::string>{"seed", "legal", "code", "dense"}));
  EXPECT_EQ(fake.compute->continues, (std::vector<std::string>{"", "seed", "seed", "seed"}));
  EXPECT_EQ(fake.compute->steps, (std::vector<std::int64_t>{100, 200, 200, 200}));
  EXPECT_EQ(fake.compute->forest_tokens, 1638400);
  EXPECT_EQ(fake.compute->dense_tokens, 1638400);

  const fs::path copy = dir_ / "copy";
  write_eval_file(copy / "eval.h5", fake);
  const EvalResults back = read_eval_file(copy / "eval.h5");
  EXPECT_EQ(back.elms, fake.elms);
  EXPECT_EQ(back.methods, fake.methods);
  EXPECT_EQ(back.mean_in_domain, fake.mean_in_domain);
  EXPECT_EQ(back.priors, fake.priors);
  EXPECT_EQ(back.average_weights, fake.average_weights);
  EXPECT_EQ(back.compute->flops, fake.compute->flops);
  EXPECT_EQ(back.compute->train_seconds, fake.compute->train_seconds);
  ASSERT_EQ(back.perplexity.size(), fake.perplexity.size());
  for (std::size_t i = 0; i < fake.perplexity.size(); ++i)  // with the NaN entry
    EXPECT_TRUE(back.perplexity[i] == fake.perplexity[i] ||
                (std::isnan(back.perplexity[i]) && std::isnan(fake.perplexity[i])))
        << i;

  fs::copy(run / "metrics", copy / "metrics");
  ASSERT_EQ(tool("report.py", shell_quote(copy.string()), log), 0) << read_text(log);
  ASSERT_EQ(tool("report.py", shell_quote(run.string()), log), 0) << read_text(log);
  // The same report but for the line naming the eval file.
  const auto without_path = [](std::string md) {
    const std::size_t at = md.find("- Eval file:");
    return at == std::string::npos ? md : md.erase(at, md.find('\n', at) - at);
  };
  const std::string md = without_path(read_text(run / "report" / "report.md"));
  EXPECT_NE(md.find("| dense | 200 | 8 | 1,638,400 |"), std::string::npos) << md;
  EXPECT_EQ(without_path(read_text(copy / "report" / "report.md")), md);
}

// The C++ reader refuses what is not a readable btm eval file, naming the file; it reads format
// version 1 (no /compute).
TEST_F(ReportTool, CppReaderChecksFormatAndVersion) {
  const fs::path run = dir_ / "run", log = dir_ / "log.txt";
  ASSERT_EQ(tool("make_fake_eval.py", shell_quote(run.string()), log), 0) << read_text(log);
  const fs::path metrics = run / "metrics" / "seed.h5";
  EXPECT_NE(read_error(metrics).find(metrics.string() + ": not a btm eval file"), std::string::npos)
      << read_error(metrics);
  const fs::path text = dir_ / "text.h5";
  std::ofstream(text) << "not hdf5\n";
  EXPECT_NE(read_error(text).find(text.string() + ": not an HDF5 file"), std::string::npos)
      << read_error(text);
  EXPECT_NE(read_error(dir_ / "none.h5").find("none.h5: file not found"), std::string::npos);

  // A file of another version, a version 1 file, a file with a dataset of the wrong shape.
  const auto edited = [&](const std::string& name, auto edit) {
    const fs::path path = dir_ / name;
    fs::copy_file(run / "eval.h5", path);
    h5::Handle file = h5::open_file(path, true);
    edit(file.get());
    return path;
  };
  const fs::path v4 =
      edited("v4.h5", [](hid_t f) { h5::set_attr(f, "format_version", std::int64_t{4}); });
  EXPECT_NE(read_error(v4).find(v4.string() + ": btm eval format version 4"), std::string::npos)
      << read_error(v4);
  const fs::path v1 = edited("v1.h5", [](hid_t f) {
    h5::set_attr(f, "format_version", std::int64_t{1});
    BTM_H5(H5Ldelete(f, "compute", H5P_DEFAULT));
  });
  EXPECT_EQ(read_error(v1), "");
  EXPECT_FALSE(read_eval_file(v1).compute);
  const fs::path no_compute =
      edited("no_compute.h5", [](hid_t f) { BTM_H5(H5Ldelete(f, "compute", H5P_DEFAULT)); });
  EXPECT_NE(read_error(no_compute).find(no_compute.string() + ": group /compute is missing"),
            std::string::npos)
      << read_error(no_compute);
  const fs::path priors = edited("priors.h5", [](hid_t f) {
    BTM_H5(H5Ldelete(f, "priors", H5P_DEFAULT));
    const double zeros[3] = {};
    h5::write_array(f, "priors", zeros, 3);
  });
  EXPECT_NE(read_error(priors).find(priors.string() + ": /priors is [3], expected [4, 2]"),
            std::string::npos)
      << read_error(priors);
  const fs::path no_ranks = edited("no_ranks.h5", [](hid_t f) { BTM_H5(H5Adelete(f, "ranks")); });
  EXPECT_NE(read_error(no_ranks).find(no_ranks.string() + ": missing attribute 'ranks'"),
            std::string::npos)
      << read_error(no_ranks);
}

// The merge rows' parameters (/merges): the C++ reader reads what tools/btm_files.py writes, the
// C++ writer writes them back, and report.py lists them under "Merges".
TEST_F(ReportTool, MergeRowsAndTheirParameters) {
  const fs::path run = dir_ / "run", log = dir_ / "log.txt";
  ASSERT_EQ(tool("make_fake_eval.py", shell_quote(run.string()) + " --merges", log), 0)
      << read_text(log);
  const EvalResults fake = read_eval_file(run / "eval.h5");
  ASSERT_TRUE(fake.merges);
  const std::vector<std::string> rows = {"merge:ties:uniform", "merge:ties:cached-prior",
                                         "merge:dare:uniform", "merge:dare:cached-prior"};
  EXPECT_EQ(fake.merges->rows, rows);
  EXPECT_EQ(fake.merges->method, (std::vector<std::string>{"ties", "ties", "dare", "dare"}));
  EXPECT_EQ(fake.merges->density[0], 0.2);
  EXPECT_TRUE(std::isnan(fake.merges->density[2]));
  EXPECT_EQ(fake.merges->drop[3], 0.9);
  EXPECT_EQ(fake.merges->seed, 1);
  for (const std::string& r : rows)
    EXPECT_NE(std::find(fake.methods.begin(), fake.methods.end(), r), fake.methods.end()) << r;

  const fs::path copy = dir_ / "copy";
  write_eval_file(copy / "eval.h5", fake);
  const EvalResults back = read_eval_file(copy / "eval.h5");
  ASSERT_TRUE(back.merges);
  EXPECT_EQ(back.merges->rows, rows);
  EXPECT_EQ(back.merges->scheme, fake.merges->scheme);
  EXPECT_EQ(back.merges->lambda, fake.merges->lambda);
  EXPECT_EQ(back.merges->seconds, 1.5);
  fs::copy(run / "metrics", copy / "metrics");
  ASSERT_EQ(tool("report.py", shell_quote(copy.string()), log), 0) << read_text(log);
  const std::string md = read_text(copy / "report" / "report.md");
  EXPECT_NE(md.find("## Merges"), std::string::npos) << md;
  EXPECT_NE(md.find("- **merge:M:S**: "), std::string::npos) << md;
  EXPECT_NE(md.find("| merge:ties:uniform | ties | uniform | 1 | 0.2 | – |"), std::string::npos)
      << md;
  EXPECT_NE(md.find("| merge:dare:cached-prior | dare | cached-prior | 1 | – | 0.9 |"),
            std::string::npos)
      << md;
}

}  // namespace
}  // namespace btm

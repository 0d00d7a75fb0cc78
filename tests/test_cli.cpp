// The command line: help, errors with exit code 2, config files and flag precedence.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <fstream>
#include <iterator>

#include "btm/app/cli.hpp"
#include "btm/io/forest.hpp"
#include "btm/util/error.hpp"
#include "test_util.hpp"

using namespace btm;
using btm::test::run_btm;

TEST(Cli, HelpExitsZeroAndListsCommands) {
  auto r = run_btm("--help");
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.output.find("run"), std::string::npos);
  EXPECT_NE(r.output.find("prepare"), std::string::npos);
  auto c = run_btm("run --help");
  EXPECT_EQ(c.exit_code, 0) << c.output;
  EXPECT_NE(c.output.find("--model.d_model"), std::string::npos);
  EXPECT_NE(c.output.find("--config"), std::string::npos);
}

TEST(Cli, UnknownCommandOptionAndValueAreOneLineErrorsWithExitCode2) {
  for (const std::string args : {"frobnicate", "run --no-such-option", "run --model.d_model=abc",
                                 "run --config /nonexistent/x.cfg", "layout --run.device=tpu",
                                 "layout --model.n_head=3 --model.d_model=64"}) {
    auto r = run_btm(args);
    EXPECT_EQ(r.exit_code, 2) << args << "\n" << r.output;
    EXPECT_NE(r.output.find("btm: error:"), std::string::npos) << args << "\n" << r.output;
    EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << args << "\n" << r.output;
  }
}

TEST(Cli, FlagsOverrideTheConfigFileAndLaterFilesWin) {
  btm::test::TempDir dir;
  {
    std::ofstream a(dir / "a.cfg");
    a << "[model]\nn_layer = 3\nd_model = 96\n[data]\ndomains = x, y\n[run]\nsteps = 7\n";
    std::ofstream b(dir / "b.cfg");
    b << "[model]\nd_model = 48\n[eval]\ntopk = 1,2\n";
  }
  Config config;
  parse_command("test", "",
                {"--config", (dir / "a.cfg").string(), "--config", (dir / "b.cfg").string(),
                 "--run.steps", "11"},
                po::options_description(), &config, false);
  EXPECT_EQ(config.model.n_layer, 3);
  EXPECT_EQ(config.model.d_model, 48);  // b.cfg wins over a.cfg
  EXPECT_EQ(config.run.steps, 11);      // the flag wins over the file
  EXPECT_EQ(config.data.domains, (std::vector<std::string>{"x", "y"}));
  EXPECT_EQ(config.eval.topk, (std::vector<int>{1, 2}));
}

TEST(Cli, ConfigFileErrorsNameTheFile) {
  btm::test::TempDir dir;
  {
    std::ofstream a(dir / "bad.cfg");
    a << "[model]\nwidth = 3\n";
  }
  Config config;
  try {
    parse_command("test", "", {"--config", (dir / "bad.cfg").string()}, po::options_description(),
                  &config, false);
    FAIL() << "expected an InputError";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("bad.cfg"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("model.width"), std::string::npos) << e.what();
  }
}

TEST(Cli, ToIniRoundTripsThroughTheParser) {
  Config a;
  a.model.n_layer = 5;
  a.optim.lr = 3.25e-4;
  a.data.domains = {"legal", "code"};
  a.run.dense = false;
  a.run.share_gpus = true;
  a.eval.topk = {1, 3};
  btm::test::TempDir dir;
  {
    std::ofstream f(dir / "x.cfg");
    f << to_ini(a);
  }
  Config b;
  parse_command("test", "", {"--config", (dir / "x.cfg").string()}, po::options_description(), &b,
                false);
  EXPECT_EQ(to_ini(a), to_ini(b));
  EXPECT_TRUE(b.run.share_gpus);
}

// btm config: the settings the files and flags make, as INI text or one value (job scripts read
// run.dir with it); the INI text parses back to the same settings.
TEST(Cli, ConfigPrintsTheSettingsOrOneValue) {
  btm::test::TempDir dir;
  {
    std::ofstream a(dir / "a.cfg");
    a << "[run]\ndir = runs/from-file\nsteps = 7\n[optim]\nlr = 5e-4\n";
  }
  const std::string cfg = "--config " + (dir / "a.cfg").string();
  auto r = run_btm("config " + cfg + " --get run.dir");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output, "runs/from-file\n");
  r = run_btm("config " + cfg + " --run.dir elsewhere --get run.dir");
  EXPECT_EQ(r.output, "elsewhere\n");
  r = run_btm("config " + cfg + " --get optim.lr");
  EXPECT_EQ(r.output, "0.0005\n");  // the shortest text that reads back exactly
  r = run_btm("config " + cfg + " --get run.nosuch");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("no setting named 'run.nosuch'"), std::string::npos) << r.output;
  r = run_btm("config " + cfg);
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.output.find("[run]\ndir = runs/from-file\nsteps = 7\n"), std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("decay = linear\n"), std::string::npos) << r.output;
}

// btm config --list: every setting of the field table with its type, default (the INI writer's
// text) and range; docs/config.md is its output, so the page cannot drift from the table.
TEST(Cli, ConfigListIsTheGlossaryInDocs) {
  const auto r = run_btm("config --list");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::vector<FieldDoc> fields = field_docs();
  for (const FieldDoc& f : fields)
    EXPECT_NE(r.output.find("| `" + f.name + "` | "), std::string::npos) << f.name;
  std::size_t rows = 0;  // table rows, one per setting
  for (std::size_t at = r.output.find("\n| `"); at != std::string::npos;
       at = r.output.find("\n| `", at + 1))
    ++rows;
  EXPECT_EQ(rows, fields.size());
  EXPECT_NE(r.output.find("| `optim.lr` | number | `0.0005` | > 0 | peak learning rate |"),
            std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("| `optim.decay` | linear or cosine | `linear` | - |"), std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("| `data.batch` | integer | `4` | >= 1 | sequences per rank"),
            std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("**`data.batch` is per rank.**"), std::string::npos) << r.output;
  // Every default is as to_ini writes it (the shortest exact text), never 0.00050000000000000001.
  const std::string ini = to_ini(Config{});
  EXPECT_NE(ini.find("lr = 0.0005\n"), std::string::npos) << ini;
  EXPECT_NE(ini.find("eps = 1e-08\n"), std::string::npos) << ini;
  std::ifstream doc(btm::test::source_dir() + "/docs/config.md");
  const std::string page((std::istreambuf_iterator<char>(doc)), std::istreambuf_iterator<char>());
  EXPECT_EQ(page, r.output) << "docs/config.md is stale: build/btm config --list > docs/config.md";
  EXPECT_EQ(run_btm("config --list --get run.dir").exit_code, 2);
}

// btm forest list: one row per model, columns as wide as their longest entry (a long name or
// "average" runs into no other column), numbers grouped.
TEST(Cli, ForestListKeepsItsColumnsApart) {
  btm::test::TempDir dir;
  Forest f;
  f.upsert({"seed",
            ModelKind::seed,
            {"a"},
            {},
            {},
            ModelStatus::trained,
            250,
            128,
            32768000,
            0,
            "elms/seed.h5",
            ""});
  f.upsert({"package_descriptions",
            ModelKind::elm,
            {"package_descriptions"},
            {"seed"},
            {1.0},
            ModelStatus::trained,
            500,
            16,
            36864000,
            0,
            "elms/package_descriptions.h5",
            ""});
  f.upsert({"avg",
            ModelKind::average,
            {"a"},
            {"seed", "package_descriptions"},
            {0.5, 0.5},
            ModelStatus::trained,
            500,
            0,
            2048,
            0,
            "elms/avg.h5",
            ""});
  save_forest(dir.path(), f);
  const auto r = run_btm("forest list --run.dir " + dir.path().string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(
      r.output.find("package_descriptions  elm      trained  500    16            36,864,000"),
      std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("avg                   average  trained  500    -             2,048"),
            std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("seed(0.5) package_descriptions(0.5)"), std::string::npos) << r.output;
}

TEST(Cli, BooleanOptionsRefuseOtherWords) {
  Config c;
  try {
    parse_command("test", "", {"--run.share_gpus", "maybe"}, po::options_description(), &c, false);
    FAIL() << "expected an InputError";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("run.share_gpus"), std::string::npos) << e.what();
  }
}

TEST(Cli, ShippedConfigsAreValid) {
  for (const char* name : {"tiny", "gpt2-124m", "btm-125m", "btm-350m", "btm-750m", "btm-1.3b"}) {
    Config c;
    const std::string path = btm::test::source_dir() + "/inputs/" + name + ".cfg";
    EXPECT_NO_THROW(
        parse_command("test", "", {"--config", path}, po::options_description(), &c, false))
        << path;
  }
}

// `btm bench` prints one JSON line per case with measured figures, and refuses bad options.
TEST(Cli, BenchPrintsOneJsonLinePerCase) {
  auto r = run_btm(
      "bench --run.device cpu --run.threads 1 --model.n_layer 1 --model.d_model 32 "
      "--model.n_head 2 --model.context 16 --data.batch 2 --steps 3 --warmup 1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const char* c : {"{\"case\": \"train\"", "{\"case\": \"aggregate\"", "{\"case\": \"eval\""})
    EXPECT_NE(r.output.find(c), std::string::npos) << c << "\n" << r.output;
  // Measured, not printed constants: the timed steps move the loss and take time.
  const auto train = r.output.find("{\"case\": \"train\"");
  const std::string line = r.output.substr(train, r.output.find('\n', train) - train);
  const nlohmann::json parsed = nlohmann::json::parse(line);  // the line is JSON
  const auto field = [&](const std::string& name) {
    EXPECT_TRUE(parsed.contains(name)) << name;
    return parsed.value(name, 0.0);
  };
  EXPECT_GT(field("tokens_per_s"), 0);
  EXPECT_GT(field("step_ms"), 0);
  EXPECT_NE(field("loss_first"), field("loss"));
  EXPECT_EQ(r.output.find("\"mfu\""), std::string::npos) << "no MFU on cpu without --peak-tflops";

  // The average case alone: its line (3 parents) and nothing else.
  auto average = run_btm(
      "bench --run.device cpu --cases average --model.n_layer 1 --model.d_model 32 "
      "--model.n_head 2 --model.context 16 --steps 1 --warmup 0 --elms 3");
  ASSERT_EQ(average.exit_code, 0) << average.output;
  EXPECT_NE(average.output.find("{\"case\": \"average\""), std::string::npos) << average.output;
  EXPECT_NE(average.output.find("\"elms\": 3"), std::string::npos) << average.output;
  EXPECT_EQ(average.output.find("\"train\""), std::string::npos) << average.output;

  auto bad = run_btm("bench --run.device cpu --cases train,fly");
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.output.find("unknown case 'fly'"), std::string::npos) << bad.output;
  bad = run_btm("bench --run.device cpu --steps 0");
  EXPECT_EQ(bad.exit_code, 2);
  bad = run_btm("bench --run.device cpu --attention flash-wgmma-please");
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.output.find("use auto, flash, flash-mma.sync or materialized"), std::string::npos)
      << bad.output;
}

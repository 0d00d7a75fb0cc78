#include "btm/io/forest.hpp"

#include "btm/io/h5.hpp"
#include "btm/util/error.hpp"

namespace btm {

namespace fs = std::filesystem;

namespace {

// A word of the manifest as its enum, InputError naming `what` for any other word.
template <typename E>
E word_in_file(const std::string& word, const std::string& what) {
  const auto value = from_word<E>(word);
  if (!value) throw InputError(what + " is '" + word + "', not one of " + word_list<E>());
  return *value;
}

}  // namespace

const ModelRecord* Forest::find(const std::string& name) const {
  for (const ModelRecord& m : models)
    if (m.name == name) return &m;
  return nullptr;
}

ModelRecord* Forest::find(const std::string& name) {
  for (ModelRecord& m : models)
    if (m.name == name) return &m;
  return nullptr;
}

void Forest::upsert(const ModelRecord& record) {
  if (ModelRecord* m = find(record.name))
    *m = record;
  else
    models.push_back(record);
}

bool Forest::remove(const std::string& name) {
  for (auto it = models.begin(); it != models.end(); ++it)
    if (it->name == name) {
      models.erase(it);
      return true;
    }
  return false;
}

std::vector<const ModelRecord*> Forest::elms() const {
  std::vector<const ModelRecord*> out;
  for (const ModelRecord& m : models)
    if (m.kind == ModelKind::elm) out.push_back(&m);
  return out;
}

std::vector<std::string> Forest::trained_elm_names() const {
  std::vector<std::string> out;
  for (const ModelRecord* r : elms())
    if (r->status == ModelStatus::trained) out.push_back(r->name);
  return out;
}

fs::path forest_file(const fs::path& run_dir) {
  return run_dir / "forest.h5";
}
fs::path checkpoint_file(const fs::path& run_dir, const std::string& name) {
  return run_dir / "elms" / (name + ".h5");
}
fs::path metrics_file(const fs::path& run_dir, const std::string& name) {
  return run_dir / "metrics" / (name + ".h5");
}
fs::path eval_file(const fs::path& run_dir) {
  return run_dir / "eval.h5";
}

Forest load_forest(const fs::path& run_dir) {
  const fs::path file = forest_file(run_dir);
  Forest forest;
  if (!fs::exists(file)) return forest;
  try {
    h5::Handle f = h5::open_file(file, false);
    if (!h5::has_attr(f, "format") || h5::get_string(f, "format") != "btm-forest")
      throw InputError("not a btm forest manifest");
    const std::int64_t version = h5::get_int(f, "format_version");
    if (version != 1 && version != kForestFormatVersion)
      throw InputError("forest format version " + std::to_string(version) +
                       ", this btm reads 1 and " + std::to_string(kForestFormatVersion));
    forest.config_ini = h5::get_string(f, "config");
    if (h5::has_attr(f, "clusters")) forest.clusters = h5::get_string(f, "clusters");
    const std::vector<std::string> order = h5::get_strings(f, "order");
    h5::Handle models = h5::open_group(f, "models");
    for (const std::string& name : order) {
      if (!h5::exists(models, name)) throw InputError("model '" + name + "' is listed but missing");
      h5::Handle g = h5::open_group(models, name);
      ModelRecord m;
      m.name = name;
      m.kind = word_in_file<ModelKind>(h5::get_string(g, "kind"), "kind of model '" + name + "'");
      m.domains = h5::get_strings(g, "domains");
      m.parents = h5::get_strings(g, "parents");
      m.parent_weights = h5::get_doubles(g, "parent_weights");
      m.status =
          word_in_file<ModelStatus>(h5::get_string(g, "status"), "status of model '" + name + "'");
      m.steps = h5::get_int(g, "steps");
      m.tokens = h5::get_int(g, "tokens");
      if (version >= 2) {
        m.global_batch = h5::get_int(g, "global_batch");
        m.flops = h5::get_double(g, "flops");
      }
      m.checkpoint = h5::get_string(g, "checkpoint");
      if (h5::has_attr(g, "state_from")) m.state_from = h5::get_string(g, "state_from");
      forest.models.push_back(std::move(m));
    }
    if (h5::exists(f, "timing")) {
      h5::Handle g = h5::open_group(f, "timing");
      const std::vector<std::string> phases = h5::get_strings(g, "phases");
      const std::vector<double> wall = h5::get_doubles(g, "wall_s");
      const std::vector<double> train = h5::get_doubles(g, "train_s");
      if (wall.size() != phases.size() || train.size() != phases.size())
        throw InputError("/timing: phases, wall_s and train_s differ in length");
      for (std::size_t i = 0; i < phases.size(); ++i)
        forest.timing.push_back({phases[i], wall[i], train[i]});
    }
  } catch (const InputError& e) {
    throw InputError(file.string() + ": " + e.what() +
                     " (restore it from a backup, or move it away to start a new forest)");
  } catch (const SystemError& e) {
    throw InputError(file.string() + ": unreadable forest manifest (" + e.what() + ")");
  }
  return forest;
}

void save_forest(const fs::path& run_dir, const Forest& forest) {
  h5::AtomicFile out(forest_file(run_dir));
  hid_t root = out.root();
  h5::set_attr(root, "format", std::string("btm-forest"));
  h5::set_attr(root, "format_version", static_cast<std::int64_t>(kForestFormatVersion));
  h5::set_attr(root, "config", forest.config_ini);
  h5::set_attr(root, "domains_are", std::string(forest.clusters.empty() ? "labels" : "clusters"));
  if (!forest.clusters.empty()) h5::set_attr(root, "clusters", forest.clusters);
  std::vector<std::string> order;
  h5::Handle models = h5::create_group(root, "models");
  for (const ModelRecord& m : forest.models) {
    order.push_back(m.name);
    h5::Handle g = h5::create_group(models, m.name);
    h5::set_attr(g, "kind", std::string(word_of(m.kind)));
    h5::set_attr(g, "domains", m.domains);
    h5::set_attr(g, "parents", m.parents);
    h5::set_attr(g, "parent_weights", m.parent_weights);
    h5::set_attr(g, "status", std::string(word_of(m.status)));
    h5::set_attr(g, "steps", m.steps);
    h5::set_attr(g, "global_batch", m.global_batch);
    h5::set_attr(g, "tokens", m.tokens);
    h5::set_attr(g, "flops", m.flops);
    h5::set_attr(g, "checkpoint", m.checkpoint);
    h5::set_attr(g, "state_from", m.state_from);
  }
  if (!forest.timing.empty()) {
    h5::Handle g = h5::create_group(root, "timing");
    std::vector<std::string> phases;
    std::vector<double> wall, train;
    for (const PhaseTime& t : forest.timing) {
      phases.push_back(t.phase);
      wall.push_back(t.wall_s);
      train.push_back(t.train_s);
    }
    h5::set_attr(g, "phases", phases);
    h5::set_attr(g, "wall_s", wall);
    h5::set_attr(g, "train_s", train);
  }
  h5::set_attr(root, "order", order);
  out.commit();
}

}  // namespace btm

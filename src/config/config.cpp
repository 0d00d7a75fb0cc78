#include "btm/config/config.hpp"

#include <charconv>
#include <cmath>
#include <set>

#include "btm/util/error.hpp"
#include "btm/util/format.hpp"

namespace btm {

namespace {

void require(bool ok, const std::string& what) {
  if (!ok) throw InputError("invalid configuration: " + what);
}

void check_domain_name(const std::string& name, const char* option) {
  require(!name.empty(), std::string(option) + " has an empty domain name");
  for (char c : name)
    require(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.',
            std::string(option) + ": domain name '" + name +
                "' may only use letters, digits, '_', '-' and '.'");
  require(
      name != "seed" && name != "dense" && !name.starts_with("average"),
      std::string(option) + ": '" + name + "' is reserved for the seed / dense / averaged models");
}

std::string join(const std::vector<std::string>& items, const char* separator) {
  std::string out;
  for (const std::string& s : items) out += (out.empty() ? "" : separator) + s;
  return out;
}

// The whole of `text` as a number of type T (std::from_chars), else InputError naming `name`.
template <typename T>
void parse_number(const std::string& text, T& out, const std::string& name, const char* what) {
  const char* end = text.data() + text.size();
  const auto [ptr, ec] = std::from_chars(text.data(), end, out);
  if (ec != std::errc() || ptr != end || text.empty())
    throw InputError("option '" + name + "': '" + text + "' is not " + what);
}

// "[0, 1)", ">= 1", "> 0"
std::string describe(const Limits& l) {
  const bool has_lo = std::isfinite(l.lo), has_hi = std::isfinite(l.hi);
  if (has_lo && !has_hi) return (l.lo_open ? "> " : ">= ") + field_text(l.lo);
  if (!has_lo && has_hi) return (l.hi_open ? "< " : "<= ") + field_text(l.hi);
  return "in " + std::string(l.lo_open ? "(" : "[") + field_text(l.lo) + ", " + field_text(l.hi) +
         (l.hi_open ? ")" : "]");
}

template <typename T>
void check_limits(const std::string& name, const T& value, const Limits& l) {
  if constexpr (std::is_arithmetic_v<T> && !std::is_same_v<T, bool>) {
    const double x = static_cast<double>(value);
    const bool ok = (l.lo_open ? x > l.lo : x >= l.lo) && (l.hi_open ? x < l.hi : x <= l.hi);
    require(ok, name + " must be " + describe(l) + " (it is " + field_text(value) + ")");
  }
}

// The kind of value a setting takes, in words (the glossary).
std::string type_word(int) {
  return "integer";
}
std::string type_word(std::int64_t) {
  return "integer";
}
std::string type_word(std::uint64_t) {
  return "integer >= 0";
}
std::string type_word(double) {
  return "number";
}
std::string type_word(bool) {
  return "true or false";
}
std::string type_word(const std::string&) {
  return "text";
}
std::string type_word(const Names&) {
  return "names, comma separated";
}
std::string type_word(const Ints&) {
  return "integers, comma separated";
}
template <typename E>
requires std::is_enum_v<E> std::string type_word(E) {
  return word_list<E>();
}

}  // namespace

std::vector<std::string> split_list(const std::string& text) {
  std::vector<std::string> items;
  std::string item;
  auto flush = [&] {
    const auto b = item.find_first_not_of(" \t");
    const auto e = item.find_last_not_of(" \t");
    if (b != std::string::npos) items.push_back(item.substr(b, e - b + 1));
    item.clear();
  };
  for (char c : text) {
    if (c == ',')
      flush();
    else
      item += c;
  }
  flush();
  return items;
}

std::string field_text(int value) {
  return std::to_string(value);
}
std::string field_text(std::int64_t value) {
  return std::to_string(value);
}
std::string field_text(std::uint64_t value) {
  return std::to_string(value);
}
std::string field_text(double value) {
  return shortest(value);
}
std::string field_text(bool value) {
  return value ? "true" : "false";
}
std::string field_text(const std::string& value) {
  return value;
}
std::string field_text(const Names& value) {
  return join(value, ",");
}
std::string field_text(const Ints& value) {
  std::vector<std::string> items;
  for (int v : value) items.push_back(std::to_string(v));
  return join(items, ",");
}

void parse_field(const std::string& text, int& out, const std::string& name) {
  parse_number(text, out, name, "an integer");
}
void parse_field(const std::string& text, std::int64_t& out, const std::string& name) {
  parse_number(text, out, name, "an integer");
}
void parse_field(const std::string& text, std::uint64_t& out, const std::string& name) {
  parse_number(text, out, name, "a non-negative integer");
}
void parse_field(const std::string& text, double& out, const std::string& name) {
  parse_number(text, out, name, "a number");
}
void parse_field(const std::string& text, bool& out, const std::string& name) {
  if (text == "true" || text == "1" || text == "yes" || text == "on")
    out = true;
  else if (text == "false" || text == "0" || text == "no" || text == "off")
    out = false;
  else
    throw InputError("option '" + name + "': '" + text + "' is not true or false");
}
void parse_field(const std::string& text, std::string& out, const std::string&) {
  out = text;
}
void parse_field(const std::string& text, Names& out, const std::string&) {
  out = split_list(text);
}
void parse_field(const std::string& text, Ints& out, const std::string& name) {
  out.clear();
  for (const std::string& item : split_list(text)) {
    int v = 0;
    parse_number(item, v, name, "a list of integers");
    out.push_back(v);
  }
}
void throw_bad_word(const std::string& name, const std::string& text, const std::string& words) {
  throw InputError("option '" + name + "' is '" + text + "': use " + words);
}

void validate_model(const ModelConfig& m) {
  Config c;
  c.model = m;
  // The table's limits of the [model] settings, then what they must satisfy together.
  for_each_field(c, [&](const std::string& name, const auto& value, const Limits& l, const char*) {
    if (name.starts_with("model.")) check_limits(name, value, l);
  });
  require(m.d_model % m.n_head == 0, "model.d_model (" + std::to_string(m.d_model) +
                                         ") must be a multiple of model.n_head (" +
                                         std::to_string(m.n_head) + ")");
}

void validate(const Config& c) {
  for_each_field(c, [&](const std::string& name, const auto& value, const Limits& l, const char*) {
    check_limits(name, value, l);
  });
  validate_model(c.model);
  std::set<std::string> seen;
  for (const std::string& name : c.data.domains) {
    check_domain_name(name, "data.domains");
    require(seen.insert(name).second, "data.domains lists '" + name + "' twice");
  }
  for (const std::string& name : c.data.eval_domains) {
    check_domain_name(name, "data.eval_domains");
    require(seen.insert(name).second,
            "data.eval_domains: '" + name +
                "' is also a train domain or listed twice (held-out "
                "domains must be domains no ELM trains on; train domains are evaluated anyway)");
  }
  require(!c.run.dir.empty(), "run.dir must not be empty");
  require(
      c.run.elm_init == ElmInit::seed || (c.run.seed_share == 0 && c.run.seed_checkpoint.empty()),
      "run.elm_init = random gives every ELM an initialisation of its own, so there is no "
      "seed: set run.seed_share = 0 (and no run.seed_checkpoint)");
  for (int k : c.eval.topk) require(k >= 1, "eval.topk entries must be >= 1");
  std::set<std::string> merges;
  for (const std::string& m : c.eval.merges) {
    const std::optional<MergeMethod> method = from_word<MergeMethod>(m);
    require(method && *method != MergeMethod::average,
            "eval.merges: '" + m +
                "' is not a merge method: list task-arithmetic, ties, dare or dare-ties (the "
                "averages are evaluated anyway)");
    require(merges.insert(m).second, "eval.merges lists '" + m + "' twice");
  }
  require(c.eval.merges.empty() || c.run.elm_init == ElmInit::seed,
          "eval.merges merges task vectors from the ELMs' shared seed: with run.elm_init = random "
          "there is none (leave eval.merges empty)");
}

std::string to_ini(const Config& c) {
  std::string out, section;
  for_each_field(c, [&](const std::string& name, const auto& value, const Limits&, const char*) {
    const std::string s = name.substr(0, name.find('.'));
    if (s != section) {
      out += (section.empty() ? "[" : "\n[") + s + "]\n";
      section = s;
    }
    out += name.substr(s.size() + 1) + " = " + field_text(value) + "\n";
  });
  return out;
}

std::string get_field(const Config& c, const std::string& name) {
  std::string found;
  bool known = false;
  for_each_field(c, [&](const std::string& n, const auto& value, const Limits&, const char*) {
    if (n == name) {
      found = field_text(value);
      known = true;
    }
  });
  if (!known) throw InputError("no setting named '" + name + "' (btm run --help lists them)");
  return found;
}

std::vector<FieldDoc> field_docs() {
  std::vector<FieldDoc> docs;
  const Config defaults;
  for_each_field(defaults, [&](const std::string& name, const auto& value, const Limits& l,
                               const char* help) {
    const bool bounded = std::isfinite(l.lo) || std::isfinite(l.hi);
    docs.push_back({name, type_word(value), field_text(value), bounded ? describe(l) : "", help});
  });
  return docs;
}

std::vector<std::string> differing_settings(const Config& a, const Config& b) {
  static const std::set<std::string> where = {
      "run.dir",       "data.corpus",    "run.device",
      "run.threads",   "run.share_gpus", "run.checkpoint_every",
      "run.log_every", "run.eval_every", "run.eval_blocks"};
  std::vector<std::string> mine, theirs, names;
  for_each_field(a, [&](const std::string& name, const auto& value, const Limits&, const char*) {
    names.push_back(name);
    mine.push_back(field_text(value));
  });
  for_each_field(b, [&](const std::string&, const auto& value, const Limits&, const char*) {
    theirs.push_back(field_text(value));
  });
  std::vector<std::string> out;
  for (std::size_t i = 0; i < names.size(); ++i)
    if (!where.contains(names[i]) && mine[i] != theirs[i])
      out.push_back(names[i] + " (" + mine[i] + " here, " + theirs[i] + " in the forest)");
  return out;
}

std::string describe_model(const ModelConfig& m) {
  return "L=" + std::to_string(m.n_layer) + " H=" + std::to_string(m.n_head) +
         " d=" + std::to_string(m.d_model) + " T=" + std::to_string(m.context) +
         " V=" + std::to_string(m.vocab_size);
}

}  // namespace btm

"""btm's eval file from Python: the one place the Python tools know the layout of RUN/eval.h5
(the C++ side, and the layout itself, is include/btm/io/eval_file.hpp).

  read_eval(path)           -> EvalResults, checked against the format; BadInput naming the file
  write_eval(path, results) writes an EvalResults in the current format version (atomically)

tools/report.py reads through it, tools/make_fake_eval.py writes through it. Needs h5py and
numpy (python3-h5py, python3-numpy on Debian)."""
import dataclasses
import os

import h5py
import numpy as np

EVAL_FORMAT = "btm-eval"
EVAL_FORMAT_VERSION = 3  # what write_eval writes
# What read_eval reads: 2 adds /compute; 3 the dimension scales, /loss, /checkpoint_steps and
# the btm_version / btm_commit / written_at attributes.
EVAL_FORMAT_VERSIONS = (1, 2, 3)
# The dimension scales of format 3: dataset -> (scale, label) per dimension.
EVAL_SCALES = {
    "perplexity": (("methods", "method"), ("domains", "domain")),
    "loss": (("methods", "method"), ("domains", "domain")),
    "mean_in_domain": (("methods", "method"),),
    "mean_out_domain": (("methods", "method"),),
    "priors": (("domains", "domain"), ("elms", "elm")),
    "average_weights": (("schemes", "scheme"), ("domains", "domain"), ("elms", "elm")),
    "tokens": (("domains", "domain"),),
    "checkpoint_steps": (("checkpoints", "checkpoint"),),
}
UNITS = {"loss": "nats/token", "tokens": "tokens", "checkpoint_steps": "optimizer steps"}
COMPUTE_UNITS = {"steps": "optimizer steps", "global_batch": "sequences", "tokens": "tokens",
                 "flops": "FLOPs", "train_seconds": "s"}
AVERAGE_SCHEMES = ("uniform", "cached-prior", "argmax")  # ensemble::kAverageSchemes
COMPUTE_FIELDS = ("steps", "global_batch", "tokens", "flops", "train_seconds")  # /compute/*
STR = h5py.string_dtype()  # variable-length UTF-8, as btm's HDF5 layer writes strings


class BadInput(Exception):
    """The input is not a btm eval file we can read; the message names the file and why."""


def as_str(value):
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray) and value.shape == ():
        return as_str(value.item())
    return str(value)


def as_str_list(value):
    if isinstance(value, (str, bytes)):
        return [as_str(value)]
    return [as_str(v) for v in np.asarray(value).reshape(-1)]


@dataclasses.dataclass
class EvalCompute:
    """/compute: the models the evaluation compared, one entry each in every array."""
    models: list
    continues: list  # "seed" where a model's trajectory starts as the seed's, else ""
    steps: np.ndarray
    global_batch: np.ndarray  # sequences per step of its own phase
    tokens: np.ndarray  # over the lineage
    flops: np.ndarray  # over the lineage
    train_seconds: np.ndarray  # its own phase
    forest_tokens: int  # seed + every ELM's own
    dense_tokens: int

    def by_model(self):
        """{model: {steps, global_batch, tokens, flops, train_seconds, continues}}, in order."""
        out = {}
        for i, name in enumerate(self.models):
            out[name] = {key: getattr(self, key)[i] for key in COMPUTE_FIELDS}
            out[name]["continues"] = self.continues[i]
        return out


@dataclasses.dataclass
class EvalMerges:
    """/merges: the parameters of the merge rows "merge:METHOD:SCHEME" of /perplexity, one entry
    per row (NaN where the method has no such parameter)."""
    rows: list
    method: list  # task-arithmetic | ties | dare | dare-ties
    scheme: list  # the average scheme whose weights it merges with
    lambda_: np.ndarray  # attribute "lambda"
    density: np.ndarray  # ties
    drop: np.ndarray  # dare, dare-ties
    seed: int  # of the DARE masks
    base: str = "seed"  # the model the task vectors start from
    seconds: float = 0.0

    def by_row(self):
        """{row: {method, scheme, lambda, density, drop}}, in order."""
        return {r: {"method": self.method[i], "scheme": self.scheme[i],
                    "lambda": float(self.lambda_[i]), "density": float(self.density[i]),
                    "drop": float(self.drop[i])} for i, r in enumerate(self.rows)}


MERGE_LISTS = ("rows", "method", "scheme")
MERGE_NUMBERS = ("lambda", "density", "drop")


@dataclasses.dataclass
class EvalResults:
    """The contents of one eval.h5 (field names as in include/btm/io/eval_file.hpp).
    K ELMs, D domains, M methods, S schemes."""
    elms: list  # [K]
    domains: list  # [D] train domains, then held-out ones
    in_domain: np.ndarray  # [D] 1.0 train domain, 0.0 held-out
    methods: list  # [M]
    perplexity: np.ndarray  # [M, D], NaN where not evaluated
    mean_in_domain: np.ndarray  # [M]
    mean_out_domain: np.ndarray  # [M]
    priors: np.ndarray  # [D, K]
    tokens: np.ndarray  # [D] test tokens scored
    schemes: list = dataclasses.field(default_factory=lambda: list(AVERAGE_SCHEMES))
    average_weights: np.ndarray = None  # [S, D, K]
    compute: EvalCompute = None  # None in format version 1
    checkpoints: list = dataclasses.field(default_factory=list)  # [C] checkpoints read (format 3)
    checkpoint_steps: np.ndarray = None  # [C] their steps (format 3)
    btm_version: str = ""  # of the btm that wrote it (format 3)
    btm_commit: str = ""
    merges: EvalMerges = None  # None without eval.merges
    posterior: str = "?"
    config: str = ""  # the run's INI text
    ranks: int = 1
    score_seconds: float = 0.0
    average_seconds: float = 0.0
    combine_seconds: float = 0.0
    route_seconds: float = 0.0  # the cluster routing of the ensemble:cluster-top-k rows
    format_version: int = EVAL_FORMAT_VERSION
    path: str = None  # the file it was read from

    def train_domains(self):
        return [i for i, v in enumerate(self.in_domain) if v == 1.0]

    def heldout_domains(self):
        return [i for i, v in enumerate(self.in_domain) if v != 1.0]


def read_eval(path):
    """The EvalResults of the eval file `path`; BadInput naming the file where it is missing, not
    HDF5, not a btm eval file, of another format version, or incomplete. Required: format,
    format_version, elms, domains, in_domain, /perplexity (attribute methods), /mean_in_domain,
    /mean_out_domain, /priors, /tokens; read where present (and then checked): posterior,
    config, ranks, the timings, /average_weights, /compute, /merges, /checkpoint_steps (with
    /checkpoints), btm_version, btm_commit. /loss is log(/perplexity): not read."""
    if not os.path.exists(path):
        raise BadInput(f"{path}: file not found (run `btm eval` first)")
    if not os.path.isfile(path):
        raise BadInput(f"{path}: not a file")
    if not h5py.is_hdf5(path):
        raise BadInput(f"{path}: not an HDF5 file, so not a btm eval file")
    try:
        with h5py.File(path, "r") as f:
            return _read(path, f)
    except OSError as e:
        raise BadInput(f"{path}: cannot read the HDF5 file ({e})")


def _need(path, f, name, ndim):
    if name not in f or not isinstance(f[name], h5py.Dataset):
        raise BadInput(f"{path}: dataset /{name} is missing: not a complete btm eval file")
    data = f[name][()]
    if np.ndim(data) != ndim:
        raise BadInput(f"{path}: /{name} has {np.ndim(data)} dimensions, expected {ndim}")
    return data


def _read(path, f):
    fmt = as_str(f.attrs["format"]) if "format" in f.attrs else None
    if fmt != EVAL_FORMAT:
        what = f"its format attribute is '{fmt}'" if fmt else "it has no format attribute"
        raise BadInput(f"{path}: not a btm eval file ({what}, expected '{EVAL_FORMAT}')")
    version = int(np.asarray(f.attrs.get("format_version", -1)).reshape(-1)[0])
    if version not in EVAL_FORMAT_VERSIONS:
        raise BadInput(f"{path}: btm eval format version {version}; this btm's tools read "
                       f"versions {', '.join(map(str, EVAL_FORMAT_VERSIONS))} (use the tools of "
                       "the btm that wrote it)")
    for name in ("elms", "domains", "in_domain"):
        if name not in f.attrs:
            raise BadInput(f"{path}: root attribute '{name}' is missing")
    elms = as_str_list(f.attrs["elms"])
    domains = as_str_list(f.attrs["domains"])
    in_domain = np.asarray(f.attrs["in_domain"], dtype=float).reshape(-1)
    K, D = len(elms), len(domains)
    if len(in_domain) != D:
        raise BadInput(f"{path}: in_domain has {len(in_domain)} entries for {D} domains")
    ppl = np.asarray(_need(path, f, "perplexity", 2), dtype=float)
    if "methods" not in f["perplexity"].attrs:
        raise BadInput(f"{path}: /perplexity has no 'methods' attribute")
    methods = as_str_list(f["perplexity"].attrs["methods"])
    M = len(methods)
    if ppl.shape != (M, D):
        raise BadInput(f"{path}: /perplexity is {ppl.shape}, expected ({M} methods, {D} domains)")
    means = {}
    for name in ("mean_in_domain", "mean_out_domain"):
        means[name] = np.asarray(_need(path, f, name, 1), dtype=float)
        if means[name].shape != (M,):
            raise BadInput(f"{path}: /{name} has {means[name].shape[0]} entries for {M} methods")
    priors = np.asarray(_need(path, f, "priors", 2), dtype=float)
    if priors.shape != (D, K):
        raise BadInput(f"{path}: /priors is {priors.shape}, expected ({D}, {K})")
    tokens = np.asarray(_need(path, f, "tokens", 1)).astype(np.int64)
    if tokens.shape != (D,):
        raise BadInput(f"{path}: /tokens has {tokens.shape[0]} entries for {D} domains")
    ev = EvalResults(elms=elms, domains=domains, in_domain=in_domain, methods=methods,
                     perplexity=ppl, mean_in_domain=means["mean_in_domain"],
                     mean_out_domain=means["mean_out_domain"], priors=priors, tokens=tokens,
                     schemes=[], format_version=version, path=path)
    if "posterior" in f.attrs:
        ev.posterior = as_str(f.attrs["posterior"])
    if "config" in f.attrs:
        ev.config = as_str(f.attrs["config"])
    if "ranks" in f.attrs:
        ev.ranks = int(f.attrs["ranks"])
    for name in ("score_seconds", "average_seconds", "combine_seconds", "route_seconds"):
        if name in f.attrs:
            setattr(ev, name, float(f.attrs[name]))
    if "average_weights" in f:
        ev.average_weights = np.asarray(f["average_weights"][()], dtype=float)
        ev.schemes = as_str_list(f["average_weights"].attrs.get("schemes", []))
        if ev.average_weights.shape != (len(ev.schemes), D, K):
            raise BadInput(f"{path}: /average_weights is {ev.average_weights.shape}, expected "
                           f"({len(ev.schemes)} schemes, {D}, {K})")
    if version >= 2 and "compute" in f:
        ev.compute = _read_compute(path, f["compute"])
    if "merges" in f:
        ev.merges = _read_merges(path, f["merges"])
    for name in ("btm_version", "btm_commit"):
        if name in f.attrs:
            setattr(ev, name, as_str(f.attrs[name]))
    if version >= 3:
        ev.checkpoints = [as_str(v) for v in _need(path, f, "checkpoints", 1)]
        ev.checkpoint_steps = np.asarray(_need(path, f, "checkpoint_steps", 1)).astype(np.int64)
        if ev.checkpoint_steps.shape != (len(ev.checkpoints),):
            raise BadInput(f"{path}: /checkpoint_steps has {ev.checkpoint_steps.shape[0]} entries "
                           f"for {len(ev.checkpoints)} checkpoints")
    return ev


def _read_merges(path, g):
    for name in MERGE_LISTS + MERGE_NUMBERS + ("seed",):
        if name not in g.attrs:
            raise BadInput(f"{path}: /merges has no '{name}' attribute")
    lists = {name: as_str_list(g.attrs[name]) for name in MERGE_LISTS}
    numbers = {name: np.asarray(g.attrs[name], dtype=float).reshape(-1) for name in MERGE_NUMBERS}
    n = len(lists["rows"])
    for name, values in list(lists.items()) + list(numbers.items()):
        if len(values) != n:
            raise BadInput(f"{path}: /merges lists {n} rows but {len(values)} '{name}' entries")
    return EvalMerges(rows=lists["rows"], method=lists["method"], scheme=lists["scheme"],
                      lambda_=numbers["lambda"], density=numbers["density"], drop=numbers["drop"],
                      seed=int(g.attrs["seed"]), base=as_str(g.attrs.get("base", "seed")),
                      seconds=float(g.attrs.get("seconds", 0.0)))


def _read_compute(path, g):
    for name in ("models", "continues", "forest_tokens", "dense_tokens"):
        if name not in g.attrs:
            raise BadInput(f"{path}: /compute has no '{name}' attribute")
    models = as_str_list(g.attrs["models"])
    continues = as_str_list(g.attrs["continues"])
    if len(continues) != len(models):
        raise BadInput(f"{path}: /compute lists {len(models)} models but {len(continues)} "
                       "'continues' entries")
    arrays = {}
    for key in COMPUTE_FIELDS:
        if key not in g or not isinstance(g[key], h5py.Dataset):
            raise BadInput(f"{path}: dataset /compute/{key} is missing")
        arrays[key] = g[key][()]
        if np.shape(arrays[key]) != (len(models),):
            raise BadInput(f"{path}: /compute/{key} is {np.shape(arrays[key])}, expected "
                           f"({len(models)} models,)")
    return EvalCompute(models=models, continues=continues, **arrays,
                       forest_tokens=int(g.attrs["forest_tokens"]),
                       dense_tokens=int(g.attrs["dense_tokens"]))


def _str_list(obj, name, values):
    obj.attrs.create(name, np.array(list(values), dtype=object), dtype=STR)


def _str_dataset(group, name, values):
    group.create_dataset(name, data=np.array(list(values), dtype=object), dtype=STR)


def _scales(f, ev):
    """The dimension scales of format 3 (EVAL_SCALES), as btm's eval_file.cpp writes them."""
    for name, values in (("methods", ev.methods), ("domains", ev.domains), ("elms", ev.elms),
                         ("schemes", ev.schemes), ("checkpoints", ev.checkpoints)):
        _str_dataset(f, name, values)
        f[name].make_scale(name)
    for dataset, dims in EVAL_SCALES.items():
        for d, (scale, label) in enumerate(dims):
            f[dataset].dims[d].attach_scale(f[scale])
            f[dataset].dims[d].label = label


def write_eval(path, ev):
    """Writes `ev` (an EvalResults with average_weights and compute) to `path` in format version
    EVAL_FORMAT_VERSION, as btm writes it: built at PATH.tmp.<pid>, then renamed over PATH."""
    K, D, M = len(ev.elms), len(ev.domains), len(ev.methods)
    shapes = {"in_domain": (ev.in_domain, (D,)), "perplexity": (ev.perplexity, (M, D)),
              "mean_in_domain": (ev.mean_in_domain, (M,)),
              "mean_out_domain": (ev.mean_out_domain, (M,)), "priors": (ev.priors, (D, K)),
              "average_weights": (ev.average_weights, (len(ev.schemes), D, K)),
              "tokens": (ev.tokens, (D,))}
    for name, (value, shape) in shapes.items():
        if value is None or np.shape(value) != shape:
            raise ValueError(f"write_eval {path}: {name} is "
                             f"{None if value is None else np.shape(value)}, expected {shape}")
    if ev.compute is None:
        raise ValueError(f"write_eval {path}: no compute (format version "
                         f"{EVAL_FORMAT_VERSION} has /compute)")
    c = ev.compute
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = EVAL_FORMAT
            f.attrs["format_version"] = np.int64(EVAL_FORMAT_VERSION)
            f.attrs["config"] = ev.config
            _str_list(f, "elms", ev.elms)
            _str_list(f, "domains", ev.domains)
            f.attrs["in_domain"] = np.asarray(ev.in_domain, dtype=np.float64)
            f.attrs["posterior"] = ev.posterior
            f.attrs["ranks"] = np.int64(ev.ranks)
            for name in ("score_seconds", "average_seconds", "combine_seconds", "route_seconds"):
                f.attrs[name] = np.float64(getattr(ev, name))
            f["perplexity"] = np.asarray(ev.perplexity, dtype=np.float64)
            _str_list(f["perplexity"], "methods", ev.methods)
            f["mean_in_domain"] = np.asarray(ev.mean_in_domain, dtype=np.float64)
            f["mean_out_domain"] = np.asarray(ev.mean_out_domain, dtype=np.float64)
            f["priors"] = np.asarray(ev.priors, dtype=np.float64)
            f["average_weights"] = np.asarray(ev.average_weights, dtype=np.float64)
            _str_list(f["average_weights"], "schemes", ev.schemes)
            f["tokens"] = np.asarray(ev.tokens, dtype=np.int64)
            with np.errstate(invalid="ignore", divide="ignore"):
                f["loss"] = np.log(np.asarray(ev.perplexity, dtype=np.float64))
            steps = ev.checkpoint_steps if ev.checkpoint_steps is not None else []
            if len(steps) != len(ev.checkpoints):
                raise ValueError(f"write_eval {path}: {len(steps)} checkpoint_steps for "
                                 f"{len(ev.checkpoints)} checkpoints")
            f["checkpoint_steps"] = np.asarray(steps, dtype=np.int64)
            for name, units in UNITS.items():
                f[name].attrs["units"] = units
            f.attrs["btm_version"] = ev.btm_version
            f.attrs["btm_commit"] = ev.btm_commit
            _scales(f, ev)
            g = f.create_group("compute")
            _str_list(g, "models", c.models)
            _str_dataset(g, "models", c.models)
            g["models"].make_scale("models")
            _str_list(g, "continues", c.continues)
            g.attrs["forest_tokens"] = np.int64(c.forest_tokens)
            g.attrs["dense_tokens"] = np.int64(c.dense_tokens)
            for key in COMPUTE_FIELDS:
                dtype = np.float64 if key in ("flops", "train_seconds") else np.int64
                values = np.asarray(getattr(c, key), dtype=dtype)
                if values.shape != (len(c.models),):
                    raise ValueError(f"write_eval {path}: compute {key} is {values.shape}, "
                                     f"expected ({len(c.models)},)")
                g[key] = values
                g[key].dims[0].attach_scale(g["models"])
                g[key].dims[0].label = "model"
                g[key].attrs["units"] = COMPUTE_UNITS[key]
            if ev.merges is not None:
                m = ev.merges
                g = f.create_group("merges")
                for name in MERGE_LISTS:
                    _str_list(g, name, getattr(m, name))
                for name, values in zip(MERGE_NUMBERS, (m.lambda_, m.density, m.drop)):
                    g.attrs[name] = np.asarray(values, dtype=np.float64)
                g.attrs["seed"] = np.int64(m.seed)
                g.attrs["base"] = m.base
                g.attrs["seconds"] = np.float64(m.seconds)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)

#!/usr/bin/env python3
"""Builds a real multi-domain English corpus from Debian packages, for `btm prepare`.

Every domain's text comes from Debian packages that are fetched with `apt-get download` and
unpacked with `dpkg -x` into a work directory (nothing is installed; no root needed for those
steps). The result is OUT/DOMAIN/part-NNNNN.jsonl (one {"text": ...} document per line), a
OUT/DOMAIN/SOURCE line naming the packages (btm prepare stores it in the corpus), and
OUT/manifest.json with sources, versions, sizes and document counts.

  train domains    religious, dictionary, c_code, kernel_docs, mathematics,
                   package_descriptions, biology, python_docs
  held-out domains man_pages, computing_dictionary

Each domain is capped (--max-mb, "balanced domains"): its documents are shuffled with a fixed
seed and taken until the cap, then written in their original order. MB means 10^6 bytes of
UTF-8 text.

  tools/build_corpus.py --out corpus-text --work corpus-work            # all, 20 MB each
  tools/build_corpus.py --quick --out corpus-text --work corpus-work    # 3 + 1 small domains
  btm prepare --input corpus-text --out corpus --tokenizer gpt2

package_descriptions: this needs apt's Translation-en index. Debian's container images set
Acquire::Languages "none", so the script runs its own `apt-get update` into WORK/apt-lists
with Acquire::Languages=en (the system's lists are left alone).

Python standard library only (sqlite3 for GO.sqlite). groff renders the man pages when it is
installed (groff-base); otherwise a simple troff stripper is used (requests dropped, font and
character escapes removed) and the manifest says so.
"""

import argparse
import glob
import gzip
import html
import json
import lzma
import os
import random
import re
import shutil
import sqlite3
import struct
import subprocess
import sys
import tarfile
import time
import zlib

MB = 1_000_000

# ---------------------------------------------------------------------------------------------
# Domains
# ---------------------------------------------------------------------------------------------

DOMAINS = {
    # name: (split, packages, description)
    "religious": ("train", ["sword-text-kjv", "sword-text-web", "sword-comm-tdavid",
                            "sword-comm-mhcc", "sword-comm-scofield"],
                  "Bible texts (KJV, WEB) and commentaries (Treasury of David, Matthew Henry, "
                  "Scofield) from SWORD zText/zCom modules, OSIS/ThML/GBF markup stripped"),
    "dictionary": ("train", ["dict-gcide"],
                   "GNU Collaborative International Dictionary of English (dictd entries)"),
    "c_code": ("train", ["linux-source-6.1"],
               "Linux 6.1 C sources: .c files of kernel/, mm/, fs/, net/, lib/"),
    "kernel_docs": ("train", ["linux-doc-6.1"],
                    "Linux 6.1 Documentation/*.rst (without translations/)"),
    "mathematics": ("train", ["metamath-databases"],
                    "Metamath databases (set.mm, iset.mm, nf.mm, ...): statements and comments, "
                    "proofs ($= ... $.) removed"),
    "package_descriptions": ("train", [],
                             "Debian package descriptions (apt's Translation-en), duplicates "
                             "removed"),
    "biology": ("train", ["r-bioc-go.db"],
                "Gene Ontology terms and definitions (go_term table of GO.sqlite)"),
    "python_docs": ("train", ["python3.11-doc"],
                    "Python 3.11 documentation sources (_sources/*.rst.txt)"),
    "man_pages": ("held_out", ["manpages", "manpages-dev"],
                  "Linux man pages (sections 1-8) rendered to plain text"),
    "computing_dictionary": ("held_out", ["dict-foldoc", "dict-jargon", "dict-vera"],
                             "FOLDOC, the Jargon File and V.E.R.A. (dictd entries)"),
}

QUICK_DOMAINS = ["religious", "dictionary", "python_docs", "computing_dictionary"]
QUICK_MAX_MB = 3.0
DEFAULT_MAX_MB = 20.0
SHARD_BYTES = 2 * MB
MIN_DOC_CHARS = 32


def log(msg):
    print(f"build_corpus: {msg}", flush=True)


# ---------------------------------------------------------------------------------------------
# Packages
# ---------------------------------------------------------------------------------------------

def run(cmd, cwd=None, **kw):
    return subprocess.run(cmd, cwd=cwd, check=True, **kw)


def fetch_package(name, work):
    """Downloads NAME's .deb into WORK/debs (once) and unpacks it into WORK/root/NAME (once).

    Returns (root directory, version, .deb file name)."""
    debs = os.path.join(work, "debs")
    os.makedirs(debs, exist_ok=True)
    found = sorted(glob.glob(os.path.join(debs, f"{name}_*.deb")))
    if not found:
        log(f"apt-get download {name}")
        try:
            run(["apt-get", "download", "-q", name], cwd=debs, stdout=subprocess.DEVNULL)
        except (subprocess.CalledProcessError, FileNotFoundError) as e:
            sys.exit(f"build_corpus: apt-get download {name} failed ({e}); run apt-get update, "
                     f"or check `apt-cache policy {name}`")
        found = sorted(glob.glob(os.path.join(debs, f"{name}_*.deb")))
        if not found:
            sys.exit(f"build_corpus: apt-get download {name} left no .deb in {debs}")
    deb = found[-1]
    version = os.path.basename(deb).split("_")[1].replace("%3a", ":")
    root = os.path.join(work, "root", name)
    marker = root + ".unpacked"
    if not os.path.exists(marker):
        shutil.rmtree(root, ignore_errors=True)
        os.makedirs(root)
        run(["dpkg", "-x", deb, root])
        with open(marker, "w") as f:
            f.write(os.path.basename(deb) + "\n")
    return root, version, os.path.basename(deb)


def normalise(text):
    """Unix newlines, no trailing spaces, at most one blank line in a row."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = re.sub(r"[ \t]+\n", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


def group(pieces, target=8000, sep="\n\n"):
    """Joins consecutive pieces into documents of about `target` characters."""
    buf, size = [], 0
    for piece in pieces:
        if buf and size + len(piece) > target:
            yield sep.join(buf)
            buf, size = [], 0
        buf.append(piece)
        size += len(piece) + len(sep)
    if buf:
        yield sep.join(buf)


# ---------------------------------------------------------------------------------------------
# religious: SWORD zText / zCom modules
# ---------------------------------------------------------------------------------------------

def read_sword_confs(root):
    confs = []
    for path in sorted(glob.glob(os.path.join(root, "usr/share/sword/mods.d/*.conf"))):
        conf = {}
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if "=" in line and not line.startswith("#"):
                    key, value = line.split("=", 1)
                    conf.setdefault(key.strip(), value.strip())
        confs.append(conf)
    return confs


def strip_sword_markup(text):
    """OSIS / ThML / GBF markup to plain text: notes dropped, paragraphs and titles kept."""
    text = re.sub(r"<note\b[^>]*/>", " ", text)
    text = re.sub(r"<note\b.*?</note>", " ", text, flags=re.S)
    text = re.sub(r"<RF>.*?<Rf>", " ", text, flags=re.S)  # GBF footnotes
    text = re.sub(r"<(?:lb|br|p|/p|CM|CL|title|/title|/l|/item|/head)\b[^>]*>", "\n", text)
    text = re.sub(r"<div\b[^>]*(?:paragraph|x-p)[^>]*>", "\n", text)
    text = re.sub(r"<[^>]*>", "", text)
    text = html.unescape(text)
    text = re.sub(r"[ \t\u00a0]+", " ", text)
    text = re.sub(r" *\n *", "\n", text)
    return text


def verse_entry_size(verse_index, blocks_index, conf):
    """10 (zText/zCom: 16-bit sizes) or 12 (zText4/zCom4: 32-bit sizes). The conf's ModDrv is
    not always right (Debian's mhcc says zCom4 but has 10-byte entries), so the layout under
    which the entries fit inside their blocks wins."""
    block_sizes = [struct.unpack_from("<III", blocks_index, 12 * i)[2]
                   for i in range(len(blocks_index) // 12)]
    fit = {}
    for size, layout in ((10, "<IIH"), (12, "<III")):
        good = 0
        for i in range(min(len(verse_index) // size, 5000)):
            number, start, length = struct.unpack_from(layout, verse_index, size * i)
            if length and number < len(block_sizes) and start + length <= block_sizes[number]:
                good += 1
            elif length:
                good -= 1
        fit[size] = good - (len(verse_index) % size != 0) * 10**9
    declared = 12 if conf.get("ModDrv", "").endswith("4") else 10
    other = 22 - declared
    return other if fit[other] > fit[declared] else declared


def sword_module_docs(root, conf):
    """Documents of one module: verse entries of a block, grouped to about 8 KB."""
    data_path = os.path.join(root, "usr/share/sword", conf["DataPath"].lstrip("./"))
    docs = []
    for testament in ("ot", "nt"):
        for kind in "bcv":  # block type: book, chapter, verse
            index = os.path.join(data_path, f"{testament}.{kind}zs")
            if os.path.exists(index):
                break
        else:
            continue
        with open(index, "rb") as f:
            blocks_index = f.read()
        with open(os.path.join(data_path, f"{testament}.{kind}zz"), "rb") as f:
            compressed = f.read()
        with open(os.path.join(data_path, f"{testament}.{kind}zv"), "rb") as f:
            verse_index = f.read()
        entry_size = verse_entry_size(verse_index, blocks_index, conf)
        blocks = {}

        def block(number):
            if number not in blocks:
                offset, size, _ = struct.unpack_from("<III", blocks_index, 12 * number)
                blocks[number] = zlib.decompress(compressed[offset:offset + size])
            return blocks[number]

        pieces, current, seen = [], None, set()
        for i in range(len(verse_index) // entry_size):
            if entry_size == 10:
                number, start, size = struct.unpack_from("<IIH", verse_index, 10 * i)
            else:
                number, start, size = struct.unpack_from("<III", verse_index, 12 * i)
            # Commentaries point a range of verses at one entry: read each entry once.
            if size == 0 or 12 * number + 12 > len(blocks_index) or (number, start, size) in seen:
                continue
            seen.add((number, start, size))
            if current is not None and number != current:
                docs.extend(group(pieces))
                pieces = []
                blocks.clear()
            current = number
            raw = block(number)[start:start + size].decode("utf-8", errors="replace")
            text = normalise(strip_sword_markup(raw))
            if text:
                pieces.append(text)
        docs.extend(group(pieces))
    return docs


def docs_religious(roots):
    for root in roots:
        for conf in read_sword_confs(root):
            yield from sword_module_docs(root, conf)


# ---------------------------------------------------------------------------------------------
# dictd dictionaries (gcide, foldoc, jargon, vera)
# ---------------------------------------------------------------------------------------------

B64 = {c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}


def b64_number(s):
    n = 0
    for c in s:
        n = n * 64 + B64[c]
    return n


def dictd_entries(index_path, dict_path):
    """Entry texts in file order; headwords sharing one entry count once."""
    data = gzip.open(dict_path).read()  # .dict.dz is gzip with a random-access table
    spans = set()
    with open(index_path, encoding="utf-8", errors="replace") as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 3 or parts[0].startswith("00-database") or parts[0].startswith("00database"):
                continue
            spans.add((b64_number(parts[1]), b64_number(parts[2])))
    for offset, length in sorted(spans):
        text = normalise(data[offset:offset + length].decode("utf-8", errors="replace"))
        if text:
            yield text


def docs_dictd(roots):
    for root in roots:
        for index in sorted(glob.glob(os.path.join(root, "usr/share/dictd/*.index"))):
            dict_path = index[:-len(".index")] + ".dict.dz"
            if os.path.exists(dict_path):
                yield from group(dictd_entries(index, dict_path), target=6000)


# ---------------------------------------------------------------------------------------------
# c_code, kernel_docs, python_docs
# ---------------------------------------------------------------------------------------------

C_DIRS = ("kernel", "mm", "fs", "net", "lib")


def docs_c_code(roots):
    tarballs = glob.glob(os.path.join(roots[0], "usr/src/linux-source-*.tar.xz"))
    if not tarballs:
        sys.exit("build_corpus: no linux-source tarball in the linux-source package")
    with tarfile.open(tarballs[0], "r|xz") as tar:
        for member in tar:
            parts = member.name.split("/")
            if (member.isfile() and len(parts) > 2 and parts[1] in C_DIRS
                    and member.name.endswith(".c")):
                text = tar.extractfile(member).read().decode("utf-8", errors="replace")
                yield normalise(text)


def docs_kernel_docs(roots):
    base = glob.glob(os.path.join(roots[0], "usr/share/doc/linux-doc-*/Documentation"))[0]
    for path in sorted(glob.glob(os.path.join(base, "**/*.rst.gz"), recursive=True)):
        if "/translations/" in path:
            continue
        yield normalise(gzip.open(path).read().decode("utf-8", errors="replace"))


def docs_python_docs(roots):
    seen = set()  # python3.11-doc/html is a link to python3.11/html
    for path in sorted(glob.glob(os.path.join(roots[0], "usr/share/doc/python3*/html/_sources/**/*.rst.txt"),
                                 recursive=True)):
        real = os.path.realpath(path)
        if real in seen:
            continue
        seen.add(real)
        with open(path, encoding="utf-8", errors="replace") as f:
            yield normalise(f.read())


# ---------------------------------------------------------------------------------------------
# mathematics: Metamath without proofs
# ---------------------------------------------------------------------------------------------

MM_TOKEN = re.compile(r"\S+")


def strip_metamath_proofs(text):
    """Drops every `$= ... $.` proof outside comments; keeps statements and comments."""
    out, keep_from, in_comment, in_proof = [], 0, False, False
    for m in MM_TOKEN.finditer(text):
        token = m.group()
        if in_comment:
            if token == "$)":
                in_comment = False
        elif in_proof:
            if token == "$.":
                in_proof = False
                keep_from = m.start()  # keep the closing "$." of the statement
        elif token == "$(":
            in_comment = True
        elif token == "$=":
            in_proof = True
            out.append(text[keep_from:m.start()].rstrip())
            out.append(" ")
    if not in_proof:
        out.append(text[keep_from:])
    return "".join(out)


def docs_mathematics(roots):
    base = os.path.join(roots[0], "usr/share/metamath/databases")
    for name in ("set.mm", "iset.mm", "nf.mm", "ql.mm", "hol.mm", "peano.mm", "miu.mm", "demo0.mm"):
        path = os.path.join(base, name)
        if not os.path.exists(path):
            continue
        with open(path, encoding="utf-8", errors="replace") as f:
            text = strip_metamath_proofs(f.read())
        paragraphs = [p.strip("\n") for p in re.split(r"\n\s*\n", text) if p.strip()]
        yield from group(paragraphs, target=8000)


# ---------------------------------------------------------------------------------------------
# package_descriptions: apt's Translation-en
# ---------------------------------------------------------------------------------------------

def translation_files(work):
    lists = os.path.join(work, "apt-lists")
    os.makedirs(os.path.join(lists, "partial"), exist_ok=True)
    cache = os.path.join(work, "apt-cache")
    os.makedirs(os.path.join(cache, "archives", "partial"), exist_ok=True)
    log("apt-get update (Translation-en, into WORK/apt-lists)")
    try:
        run(["apt-get", "update", "-q", "-o", "Acquire::Languages=en",
             "-o", f"Dir::State::Lists={lists}", "-o", f"Dir::Cache={cache}",
             "-o", "Acquire::GzipIndexes=false",
             "-o", "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false"],
            stdout=subprocess.DEVNULL)
    except (subprocess.CalledProcessError, FileNotFoundError) as e:
        sys.exit(f"build_corpus: apt-get update for Translation-en failed ({e})")
    files = sorted(glob.glob(os.path.join(lists, "*Translation-en*")))
    if not files:
        sys.exit(f"build_corpus: apt-get update left no Translation-en index in {lists}")
    return files


def read_index(path):
    if path.endswith(".gz"):
        return gzip.open(path).read()
    if path.endswith(".xz"):
        return lzma.open(path).read()
    if path.endswith(".lz4"):
        return subprocess.run(["lz4", "-dc", path], check=True, stdout=subprocess.PIPE).stdout
    with open(path, "rb") as f:
        return f.read()


def docs_package_descriptions(roots, work):
    seen = set()
    entries = []
    for path in translation_files(work):
        for paragraph in read_index(path).decode("utf-8", errors="replace").split("\n\n"):
            package, lines, in_description = None, [], False
            for line in paragraph.split("\n"):
                if line.startswith("Package:"):
                    package = line.split(":", 1)[1].strip()
                    in_description = False
                elif line.startswith("Description-en:"):
                    lines = [line.split(":", 1)[1].strip(), ""]
                    in_description = True
                elif in_description and line.startswith(" "):
                    lines.append("" if line.strip() == "." else line[1:])
                else:
                    in_description = False
            if not package or not lines:
                continue
            body = normalise("\n".join(lines))
            if body in seen:  # one description shared by many packages: keep it once
                continue
            seen.add(body)
            entries.append(f"{package}: {body}")
    yield from group(entries, target=6000)


# ---------------------------------------------------------------------------------------------
# biology: GO terms
# ---------------------------------------------------------------------------------------------

ONTOLOGY = {"BP": "biological process", "MF": "molecular function", "CC": "cellular component"}


def docs_biology(roots):
    path = glob.glob(os.path.join(roots[0], "usr/lib/R/site-library/GO.db/extdata/GO.sqlite"))[0]
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    entries = []
    for go_id, term, ontology, definition in db.execute(
            "SELECT go_id, term, ontology, definition FROM go_term ORDER BY go_id"):
        if go_id == "all":
            continue
        text = f"{term} ({go_id}, {ONTOLOGY.get(ontology, ontology)})"
        if definition:
            text += f": {definition.strip()}"
        entries.append(text)
    db.close()
    yield from group(entries, target=6000, sep="\n")


# ---------------------------------------------------------------------------------------------
# man_pages
# ---------------------------------------------------------------------------------------------

def strip_troff(source):
    """A simple troff stripper for when groff is missing: section headings kept as lines, other
    requests dropped, font changes and character escapes removed."""
    out = []
    for line in source.split("\n"):
        if line.startswith(('.\\"', "'\\\"", '.\\\\"')):
            continue
        if line.startswith((".", "'")):
            request, _, rest = line[1:].partition(" ")
            if request in ("SH", "SS"):
                out.append("\n" + rest.strip('"').upper() if request == "SH" else "\n" + rest.strip('"'))
            elif request in ("B", "I", "SM"):
                out.append(rest.replace('"', ""))
            elif request in ("BR", "IR", "RB", "BI", "IB", "RI"):  # alternating fonts: no spaces
                out.append("".join(a or b for a, b in re.findall(r'"([^"]*)"|(\S+)', rest)))
            elif request in ("PP", "LP", "P", "TP", "IP", "sp", "br"):
                out.append("")
            continue
        out.append(line)
    text = "\n".join(out)
    text = re.sub(r"\\f(?:\[[^\]]*\]|\(..|.)", "", text)
    text = re.sub(r"\\\((?:em|en)", "-", text)
    text = re.sub(r"\\\(..|\\\[[^\]]*\]", "", text)
    text = text.replace("\\-", "-").replace("\\e", "\\").replace("\\&", "").replace("\\ ", " ")
    return text


def render_man(path, use_groff):
    source = gzip.open(path).read().decode("utf-8", errors="replace")
    first = next((l for l in source.split("\n") if l and not l.startswith('.\\"')), "")
    if first.startswith(".so "):
        return None  # a link to another page
    if use_groff:
        # Left-adjusted and unhyphenated: no padding spaces or split words in the text.
        result = subprocess.run(["groff", "-t", "-Tutf8", "-man", "-rHY=0", "-P-cbou"],
                                input=(".ad l\n.nh\n" + source).encode(),
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                env=dict(os.environ, LC_ALL="C.UTF-8"))
        text = result.stdout.decode("utf-8", errors="replace")
        text = re.sub(r".\x08", "", text)
    else:
        text = strip_troff(source)
    return normalise(text)


def docs_man_pages(roots):
    use_groff = shutil.which("groff") is not None
    for root in roots:
        for path in sorted(glob.glob(os.path.join(root, "usr/share/man/man[1-8]/*.gz"))):
            if os.path.islink(path):
                continue
            text = render_man(path, use_groff)
            if text:
                yield text


EXTRACTORS = {
    "religious": docs_religious,
    "dictionary": docs_dictd,
    "c_code": docs_c_code,
    "kernel_docs": docs_kernel_docs,
    "mathematics": docs_mathematics,
    "package_descriptions": None,  # needs the work dir (its own apt-get update)
    "biology": docs_biology,
    "python_docs": docs_python_docs,
    "man_pages": docs_man_pages,
    "computing_dictionary": docs_dictd,
}


# ---------------------------------------------------------------------------------------------
# Sampling and writing
# ---------------------------------------------------------------------------------------------

def write_domain(out, name, docs, source_line):
    """Writes OUT/NAME/part-*.jsonl and SOURCE through a temporary directory."""
    final = os.path.join(out, name)
    tmp = final + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    shard, shard_bytes, f = 0, 0, None
    for doc in docs:
        if f is None or shard_bytes >= SHARD_BYTES:
            if f:
                f.close()
            f = open(os.path.join(tmp, f"part-{shard:05d}.jsonl"), "w", encoding="utf-8")
            shard, shard_bytes = shard + 1, 0
        line = json.dumps({"text": doc}, ensure_ascii=False)
        f.write(line + "\n")
        shard_bytes += len(doc.encode("utf-8"))
    if f:
        f.close()
    with open(os.path.join(tmp, "SOURCE"), "w", encoding="utf-8") as s:
        s.write(source_line + "\n")
    shutil.rmtree(final, ignore_errors=True)
    os.rename(tmp, final)
    return shard


def build_domain(name, args):
    split, packages, description = DOMAINS[name]
    start = time.time()
    roots, sources = [], []
    for package in packages:
        root, version, deb = fetch_package(package, args.work)
        roots.append(root)
        sources.append({"package": package, "version": version, "deb": deb})
    if name == "package_descriptions":
        documents = docs_package_descriptions(roots, args.work)
        sources.append({"package": "apt Translation-en index",
                        "version": time.strftime("%Y-%m-%d"), "deb": None})
    else:
        documents = EXTRACTORS[name](roots)
    docs = [d for d in documents if len(d) >= MIN_DOC_CHARS]
    sizes = [len(d.encode("utf-8")) for d in docs]
    available = sum(sizes)
    # Balanced cap: a seeded shuffle, then documents until the cap, written in source order.
    order = list(range(len(docs)))
    random.Random(f"{args.seed}:{name}").shuffle(order)
    chosen, total = [], 0
    cap = args.max_mb * MB if args.max_mb > 0 else float("inf")
    for i in order:
        if total >= cap:
            break
        chosen.append(i)
        total += sizes[i]
    chosen.sort()
    if not chosen:
        sys.exit(f"build_corpus: domain {name} produced no documents")
    source_line = f"{name}: {description}; Debian packages " + ", ".join(
        f"{s['package']} {s['version']}" for s in sources)
    shards = write_domain(args.out, name, (docs[i] for i in chosen), source_line)
    info = {
        "split": split,
        "description": description,
        "sources": sources,
        "documents": len(chosen),
        "bytes": total,
        "available_documents": len(docs),
        "available_bytes": available,
        "shards": shards,
        "seconds": round(time.time() - start, 1),
    }
    if name == "man_pages":
        info["renderer"] = ("groff -t -Tutf8 -man -rHY=0 (.ad l, .nh)" if shutil.which("groff")
                            else "simple troff stripper")
    log(f"{name:22s} {split:8s} {total / MB:7.2f} MB in {len(chosen):6d} documents "
        f"(of {available / MB:8.2f} MB, {len(docs)} documents available), {info['seconds']} s")
    return info


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("--out", help="output directory: OUT/DOMAIN/*.jsonl (required)")
    parser.add_argument("--work", default="corpus-work",
                        help="download and unpack cache (reused between runs)")
    parser.add_argument("--domains", help="comma-separated domains (default: all, or the quick set)")
    parser.add_argument("--max-mb", type=float,
                        help=f"cap per domain in MB (default {DEFAULT_MAX_MB:g}; "
                             f"--quick: {QUICK_MAX_MB:g}; 0: no cap)")
    parser.add_argument("--quick", action="store_true",
                        help=f"a small corpus that downloads fast: {', '.join(QUICK_DOMAINS)}")
    parser.add_argument("--seed", type=int, default=1234, help="seed of the balanced sample")
    parser.add_argument("--list", action="store_true", help="list the domains and exit")
    args = parser.parse_args()

    if args.list:
        for name, (split, packages, description) in DOMAINS.items():
            print(f"{name:22s} {split:8s} {description} [{', '.join(packages) or 'apt lists'}]")
        return
    if not args.out:
        parser.error("--out is required")
    if args.domains:
        names = [d.strip() for d in args.domains.split(",") if d.strip()]
    else:
        names = QUICK_DOMAINS if args.quick else list(DOMAINS)
    unknown = [n for n in names if n not in DOMAINS]
    if unknown:
        sys.exit(f"build_corpus: unknown domain(s) {', '.join(unknown)} (--list shows them)")
    if args.max_mb is None:
        args.max_mb = QUICK_MAX_MB if args.quick else DEFAULT_MAX_MB
    args.work = os.path.abspath(args.work)
    os.makedirs(args.out, exist_ok=True)
    os.makedirs(args.work, exist_ok=True)

    manifest_path = os.path.join(args.out, "manifest.json")
    manifest = {"domains": {}}
    if os.path.exists(manifest_path):  # a rebuild of some domains keeps the others' entries
        with open(manifest_path, encoding="utf-8") as f:
            manifest = json.load(f)
    for name in names:
        manifest["domains"][name] = build_domain(name, args)
        manifest["domains"][name]["max_mb"] = args.max_mb
        manifest["domains"][name]["seed"] = args.seed
    manifest["train_domains"] = sorted(n for n, d in manifest["domains"].items() if d["split"] == "train")
    manifest["held_out_domains"] = sorted(n for n, d in manifest["domains"].items()
                                          if d["split"] == "held_out")
    manifest["created_by"] = "tools/build_corpus.py"
    manifest["mb"] = MB
    with open(manifest_path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    os.replace(manifest_path + ".tmp", manifest_path)
    total = sum(manifest["domains"][n]["bytes"] for n in names)
    log(f"wrote {len(names)} domains, {total / MB:.2f} MB, to {args.out} (manifest.json)")


if __name__ == "__main__":
    main()

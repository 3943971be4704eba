"""The Java runtime Spark needs: find it, check its version, and the JVM options it runs with."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

from ohlcv.errors import ConfigError

__all__ = ["JAVA_OPTIONS", "java_major_version", "require_java"]

# Spark 3.5 on Java 17 needs these modules opened, or RayDP's Arrow and object-store paths
# fail with InaccessibleObjectException (DESIGN section 6).
_OPENED_PACKAGES = (
    "java.lang", "java.lang.invoke", "java.lang.reflect", "java.io", "java.net", "java.nio", "java.util",
    "java.util.concurrent", "java.util.concurrent.atomic", "sun.nio.ch", "sun.nio.cs", "sun.security.action",
    "sun.util.calendar", "java.math", "java.text", "java.time", "java.util.regex", "java.util.concurrent.locks",
    "java.lang.ref", "java.security", "java.nio.charset",
)
# Every JVM of a Spark session (RayDP's two for the master, the driver, each executor) also
# skips bytecode verification of the classpath: its jars are the pinned pyspark, raydp and ray
# wheels, and verifying their classes was about 0.5 s of each JVM's start here (a local session
# 2.8-3.2 s -> 2.4-2.6 s, its first query 4.2 -> 3.8 s, measured on 2 cores). The JDK's own
# classes are never verified; an unknown flag in a later JDK is ignored (the first option).
_FAST_START = ("-XX:+UnlockDiagnosticVMOptions", "-XX:-BytecodeVerificationRemote")
JAVA_OPTIONS = " ".join(
    ["-XX:+IgnoreUnrecognizedVMOptions", *_FAST_START]
    + [f"--add-opens=java.base/{package}=ALL-UNNAMED" for package in _OPENED_PACKAGES]
    + ["--add-opens=java.sql/java.sql=ALL-UNNAMED"]
)
_INSTALL_JAVA = (
    "install a Java 17 runtime (Debian/Ubuntu: sudo apt-get install openjdk-17-jre-headless; "
    "macOS: brew install openjdk@17) and put `java` on PATH or set JAVA_HOME"
)


def _java_binary() -> str | None:
    home = os.environ.get("JAVA_HOME")
    if home and os.access(os.path.join(home, "bin", "java"), os.X_OK):
        return os.path.join(home, "bin", "java")
    return shutil.which("java")


def java_major_version() -> int | None:
    """The major version of the Java runtime Spark would use, or None when there is none."""
    binary = _java_binary()
    if binary is None:
        return None
    try:
        banner = subprocess.run([binary, "-version"], capture_output=True, text=True, timeout=30).stderr
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', banner)
    if not match:
        return None
    major = int(match.group(1))
    return int(match.group(2)) if major == 1 and match.group(2) else major  # "1.8" is Java 8


def require_java() -> None:
    major = java_major_version()
    if major is None:
        raise ConfigError(f"Java was not found: Spark needs it. {_INSTALL_JAVA}")
    if not 17 <= major <= 21:
        raise ConfigError(f"found Java {major}, but Spark 3.5 with RayDP here needs Java 17: {_INSTALL_JAVA}")

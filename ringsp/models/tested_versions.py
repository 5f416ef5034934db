"""The diffusers and transformers releases the model layer has been tested with.

ringsp hooks into their internals (diffusers' attention processors and model classes,
transformers' text encoders), which change between release series. An untested release fails
here, when ringsp.models is imported, in one line naming the package, the version found and
the supported range, instead of somewhere deep inside a model. RINGSP_ALLOW_UNTESTED_VERSIONS=1
turns that refusal into a warning. A package that is not installed is not checked (the
"models" extra is optional; what needs it says so when it is used).
"""
import importlib.metadata
import re
import warnings

import ringsp_kernels as rk

# package -> (lowest tested release, first release series not tested); the same ranges as
# pyproject.toml's "models" extra (tests/models/test_tested_versions.py keeps them equal)
TESTED = {"diffusers": ("0.42.1", "0.43"), "transformers": ("5.17", "5.26")}
OVERRIDE_ENV = "RINGSP_ALLOW_UNTESTED_VERSIONS"
_VERSION = re.compile(r"(\d+(?:\.\d+)*)(.*)")


class UntestedVersionError(RuntimeError):
    """An installed diffusers / transformers release outside the tested range."""


def installed_version(package):
    """The installed distribution's version string, or None."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _parse(version):
    """(release numbers padded to 3, whether it is a pre/dev release); a local part (+cpu) or a
    post release counts as the final release."""
    match = _VERSION.match(version.strip())
    if match is None:
        raise ValueError(f"cannot read the version {version!r}")
    release = tuple(int(x) for x in match.group(1).split("."))
    pre = re.match(r"\.?(a|b|c|rc|alpha|beta|pre|preview|dev)\d*", match.group(2).lower()) is not None
    return release + (0,) * (3 - len(release)), pre


def untested(package, version):
    """The one-line refusal for this version of a TESTED package, or None when it is in range.

    A pre-release of the lowest tested release is not that release; any release of the
    untested series (0.43.0.dev0 included) is outside."""
    low, high = TESTED[package]
    try:
        release, pre = _parse(version)
        ok = (release, not pre) >= (_parse(low)[0], True) and release < _parse(high)[0]
    except ValueError:
        ok = False
    if ok:
        return None
    return (f"ringsp.models: {package} {version} is not a tested release; supported: {package}>={low},<{high} "
            f"(pip install '{package}>={low},<{high}', or set {OVERRIDE_ENV}=1 to try it anyway)")


def check_tested_versions(env=None):
    """Raises UntestedVersionError for the first installed package outside its tested range;
    env: an environment to read the settings from (default: this process's settings)."""
    allow = (rk.settings.current() if env is None else rk.settings.read(env)).allow_untested
    for package in TESTED:
        version = installed_version(package)
        message = None if version is None else untested(package, version)
        if message is None:
            continue
        if allow:
            warnings.warn(message + f" -- {OVERRIDE_ENV}=1: going on untested", RuntimeWarning, stacklevel=2)
        else:
            raise UntestedVersionError(message)

"""Builds adam_plugin's compiled kernel; the package's metadata is in pyproject.toml."""
import os
import platform

from setuptools import Extension, setup
from setuptools.command.bdist_wheel import bdist_wheel
from setuptools.command.build_ext import build_ext

# The fused CPU kernel, a plain shared library (adam_plugin/libadam_kernel.so) that
# adam_plugin.kernel loads with ctypes; it holds no Python code. Optional: without a C++
# compiler the package installs without it and MyAdam takes its slower routes.
# By default it runs on any x86-64 CPU: the library is compiled for the x86-64 baseline
# and its two loops also for AVX2 and AVX-512, chosen when it is loaded (_kernel.cpp).
# ADAM_PLUGIN_NATIVE=1 at install time compiles it all for this machine's CPU only.
# -ffp-contract=off and no -ffast-math keep every operation rounded as the textbook
# NDArray path rounds it; -fno-math-errno lets sqrt vectorise.
NATIVE = os.environ.get('ADAM_PLUGIN_NATIVE', '') not in ('', '0')
if NATIVE:
    TARGET = ['-march=native', '-DADAM_PLUGIN_NATIVE']
elif platform.machine().lower() in ('x86_64', 'amd64'):
    TARGET = ['-march=x86-64', '-mtune=generic']  # not the compiler's default, which may be newer
else:
    TARGET = []

KERNEL = Extension(
    'adam_plugin.libadam_kernel',
    sources=['adam_plugin/_kernel.cpp'],
    language='c++',
    extra_compile_args=['-std=c++17', '-O3', *TARGET, '-ffp-contract=off', '-fno-math-errno',
                        '-pthread'],
    extra_link_args=['-pthread'],
    optional=True,
)


class BuildLibrary(build_ext):
    """build_ext naming the library ``libadam_kernel.so``: no CPython ABI tag, since it
    is no extension module (Python cannot import it, ctypes loads it)."""

    def get_ext_filename(self, fullname):
        return os.path.join(*fullname.split('.')) + '.so'


class Wheel(bdist_wheel):
    """A wheel for any Python 3 on this platform: the library does not use Python's ABI."""

    def get_tag(self):
        return ('py3', 'none', super().get_tag()[2])


setup(ext_modules=[KERNEL], cmdclass={'build_ext': BuildLibrary, 'bdist_wheel': Wheel})

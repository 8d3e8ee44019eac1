"""adam_plugin: the Adam optimizer as an MXNet/Gluon plugin."""
from setuptools import Extension, find_packages, setup

# The fused CPU kernel, a plain shared library that adam_plugin.fused loads with ctypes
# (it defines no Python module). Optional: without a C++ compiler the package installs
# and MyAdam takes its slower routes. -march=native, as a JIT would: it is built on the
# machine that runs it. -ffp-contract=off and no -ffast-math keep every operation
# rounded as the textbook NDArray path rounds it; -fno-math-errno lets sqrt vectorise.
KERNEL = Extension(
    'adam_plugin._kernel',
    sources=['adam_plugin/_kernel.cpp'],
    language='c++',
    extra_compile_args=['-std=c++17', '-O3', '-march=native', '-ffp-contract=off',
                        '-fno-math-errno', '-pthread'],
    extra_link_args=['-pthread'],
    optional=True,
)

setup(
    name='adam_plugin',
    version='0.1.0',
    description="Adam for MXNet/Gluon: readable, tested against the D2L chapter, registered as 'myadam'",
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    packages=find_packages(include=['adam_plugin', 'adam_plugin.*']),
    ext_modules=[KERNEL],
    python_requires='>=3.8,<3.12',
    install_requires=[
        'mxnet>=1.9.1,<2',
        'numpy<1.24',        # mxnet 1.9.1 still uses np.bool
        'matplotlib',
        'tqdm',              # the command line's progress bars
    ],
    extras_require={
        'test': ['pytest'],
    },
    entry_points={},
)

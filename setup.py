"""adam_plugin: the Adam optimizer as an MXNet/Gluon plugin."""
from setuptools import find_packages, setup

setup(
    name='adam_plugin',
    version='0.1.0',
    description="Adam for MXNet/Gluon: readable, tested against the D2L chapter, registered as 'myadam'",
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    packages=find_packages(include=['adam_plugin', 'adam_plugin.*']),
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

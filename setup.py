from setuptools import find_packages, setup

setup(
    name="ib_resilience",
    version="0.1.0",
    description="Keeps synchronous Interactive Brokers bots connected and their orders safe.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["ib_resilience", "ib_resilience.*"]),
    package_data={"ib_resilience": ["py.typed"]},
    python_requires=">=3.9",
    install_requires=["ibapi>=9.81.1", "pybreaker>=1.0", "backoff>=2.0", "PyYAML>=5.4"],
    extras_require={
        "test": ["pytest", "pytest-timeout"],
        "metrics": ["prometheus-client>=0.16"],
    },
    entry_points={
        "console_scripts": ["ib-resilience=ib_resilience.cli:main"],
        # Users' test suites get the fake_gateway / resilient_client fixtures.
        "pytest11": ["ib_resilience = ib_resilience.pytest_plugin"],
    },
)

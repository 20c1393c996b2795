"""The demo world: a seeded simulated online store and a real HTTP server for its upstream APIs, with
fault injection. See docs/simulator.md."""

from cx_pipeline.simulator.catalog import REQUIRED_ATTRIBUTES
from cx_pipeline.simulator.faults import FAULT_KINDS, Fault, FaultBook
from cx_pipeline.simulator.server import Simulator
from cx_pipeline.simulator.world import WAREHOUSES, World, build_world

__all__ = [
    "FAULT_KINDS",
    "REQUIRED_ATTRIBUTES",
    "WAREHOUSES",
    "Fault",
    "FaultBook",
    "Simulator",
    "World",
    "build_world",
]

"""Tests of the asyncclf command line, one file a module of asyncclf._cli."""

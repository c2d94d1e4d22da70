"""Commands that drive both sides on one machine: the capture agent and the workers.

The capture agent never imports the workers and the workers never import the agent; this
package is the one place allowed to import both.
"""

"""Azure readiness: the facts about a disk and the rules that judge them.

The OS readiness rules register themselves with ``rules.rule`` when imported; importing them here,
after the container and state rules, makes every rule known to whoever imports any module of the
package, with no import from ``rules`` back to its plug-ins.
"""

from vhdtool.readiness import rules, rules_linux, rules_windows  # noqa: F401

#!/usr/bin/env python3
"""The man page keeps up with the command line (issue 8 item 6).

Every subcommand answers --help (and -h) with exit status 0 and its usage; every option its
usage lines and its options list name is in the command's entry in docs/buildcachefs.1
(COMMANDS), or in the paragraph opening COMMANDS for the options every command takes
(-h, --help, --log-level). Every key the config file accepts is in CONFIG FILE.

No root, no servers.

Run by ctest: docs_test.py --bin BUILDCACHEFS --gen BUILDCACHEFS_GEN --shared DIR
"""

import os
import re
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import e2e_cli  # noqa: E402

ARGS = None
MAN = os.path.join(os.path.dirname(os.path.dirname(HERE)), "docs", "buildcachefs.1")
COMMANDS = ("mount", "ls", "du", "verify", "warm", "gc", "prune", "fsck")
OPTION = r"(?<![\w-])(--[a-z][a-z-]*|-[a-zA-Z])(?![\w-])"


def plain(troff):
    """Roughly what man shows: escapes for dashes, zero-width spaces and fonts removed."""
    text = troff.replace("\\-", "-").replace("\\&", "").replace("\\c", "")
    return re.sub(r"\\f[BIRP]", "", text)


def man_sections():
    with open(MAN) as f:
        man = f.read()
    body = man[man.index(".SH COMMANDS"):man.index(".SH CONFIG FILE")]
    parts = re.split(r"^\.TP\n\.B (\w+)", body, flags=re.M)
    entries = {parts[i]: plain(parts[i + 1]) for i in range(1, len(parts), 2)}
    config = man[man.index(".SH CONFIG FILE"):man.index(".SH RUNNING AS A SERVICE")]
    return plain(parts[0]), entries, plain(config)


def help_options(text):
    """Options named by the usage lines and by the option list (lines that start with
    whitespace and a dash), not by prose."""
    usage = text.split("\n\n", 1)[0]
    found = set(re.findall(OPTION, usage))
    for line in text.splitlines():
        m = re.match(r"^\s+(-[^\s,]+)(?:, (-[^\s,]+))?", line)
        if m:
            found.update(o for o in m.groups() if o)
    return {re.match(OPTION, o).group(1) for o in found if re.match(OPTION, o)}


class ManPage(unittest.TestCase):
    def test_every_command_has_help_and_its_options_are_in_the_man_page(self):
        common, entries, _ = man_sections()
        for o in ("-h", "--help", "--log-level"):
            self.assertIn(o, common, "the COMMANDS intro must name " + o)
        for cmd in COMMANDS:
            with self.subTest(cmd=cmd):
                p = subprocess.run([ARGS.bin, cmd, "--help"], capture_output=True, text=True,
                                   timeout=30)
                self.assertEqual(p.returncode, 0, p.stderr)
                self.assertTrue(p.stdout.startswith("Usage: buildcachefs " + cmd), p.stdout)
                short = subprocess.run([ARGS.bin, cmd, "-h"], capture_output=True, text=True,
                                       timeout=30)
                self.assertEqual((short.returncode, short.stdout), (0, p.stdout))
                opts = help_options(p.stdout)
                self.assertIn("--log-level", opts, "--help should list --log-level")
                self.assertIn("--help", opts, "--help should list -h, --help")
                self.assertIn(cmd, entries, "no COMMANDS entry for " + cmd)
                missing = sorted(o for o in opts
                                 if o not in entries[cmd] and o not in ("-h", "--help",
                                                                        "--log-level"))
                self.assertEqual(missing, [], "%s options missing from its man entry" % cmd)

    def test_every_config_key_is_in_the_man_page(self):
        _, _, config = man_sections()
        # The keys come from the error for an unknown one.
        with tempfile.NamedTemporaryFile("w", suffix=".toml") as f:
            f.write("nosuchkey = 1\n")
            f.flush()
            p = subprocess.run([ARGS.bin, "mount", "--config", f.name], capture_output=True,
                               text=True, timeout=30)
        self.assertEqual(p.returncode, 2, p.stderr)
        m = re.search(r'unknown key "nosuchkey" \(want ([a-z_, ]+)\)', p.stderr)
        self.assertTrue(m, p.stderr)
        keys = [k.strip() for k in m.group(1).split(",")]
        self.assertIn("metrics_addr", keys)
        for k in keys:
            self.assertRegex(config, r"(?m)^\[*%s\b" % re.escape(k), "config key " + k)


if __name__ == "__main__":
    e2e_cli.main()

"""Wording shared by the command's messages: a count with its noun in the right number.

Its own module because the settings checks, the schedule replanning and every command's report
say counts the same way, and none of them is the others' home."""


def plural(n, word):
    return f"{n} {word}{'' if n == 1 else 's'}"

"""The forms of names and labels the house's models take, as patterns and in words: a config
error says the words, not the regular expression."""

from __future__ import annotations

LABEL_KEY_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
LABEL_VALUE_PATTERN = r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
POLICY_NAME_PATTERN = r"^[A-Za-z0-9][-A-Za-z0-9_. ]*$"
BLOCK_PREFIX_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,48})$"
# What each pattern asks for, in words: a config error says this, not the regular expression.
PATTERN_WORDS = {
    LABEL_KEY_PATTERN: "must be a Kubernetes label key: an optional DNS prefix and '/', then up to 63"
    " letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
    " (e.g. serving-guard.io/quarantine)",
    DNS_LABEL_PATTERN: "must be a Kubernetes object name: up to 63 lower-case letters, digits or '-',"
    " starting and ending with a letter or digit",
    LABEL_VALUE_PATTERN: "must be a Kubernetes label value: up to 63 letters, digits, '-', '_' or '.',"
    " starting and ending with a letter or digit",
    POLICY_NAME_PATTERN: "must start with a letter or digit, then letters, digits, spaces, '-', '_' or '.'",
    BLOCK_PREFIX_PATTERN: "must be up to 49 lower-case letters, digits or '-', starting with a letter"
    " or digit",
}

"""JSON schema to GBNF grammar: a port of llama.cpp's converter (common/json-schema-to-grammar.cpp,
`common_schema_converter`), the one Ollama 0.33's llama-server runs on a request's `json_schema`.

Same rules, same rule names, same output and the same error texts: `JSON schema conversion failed:` and one
line per problem (`Unrecognized schema: {...}`, `Error resolving ref ...`, ...). Why a port: the xllamacpp
wheel's llama-server converts `json_schema` to an llguidance grammar instead, which accepts other schemas
than Ollama's, and when it cannot compile one it logs the error and samples unconstrained (HTTP 200).

Two points follow the newer llama.cpp that real Ollama 0.33 runs, as its Python twin
(examples/json_schema_to_grammar.py) has them: optional whitespace (`space`) only after `{`, `[`, `:` and `,`
and before `}` and `]`, never after a value (so nothing may follow the document: Ollama 0.33 answers
`"aaaa"` where the older layout let the model add a trailing space), and a `pattern` need not be anchored (a
missing `^` or `$` becomes `.*` on that side: JSON Schema patterns match anywhere).
"""

from __future__ import annotations

import json
from typing import Any

from harness.engine.grammar_rules import (
    ESCAPED_IN_REGEXPS_BUT_NOT_IN_LITERALS,
    INT_MAX,
    INVALID_RULE_CHARS,
    NON_LITERAL_SET,
    PRIMITIVE_RULES,
    RESERVED_NAMES,
    SPACE_RULE,
    STRING_FORMAT_RULES,
    UUID_FORMAT,
    BuiltinRule,
    SchemaConversionError,
    build_min_max_int,
    build_repetition,
    dump,
    format_literal,
)

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


class _InvalidPattern(ValueError):
    """A malformed `pattern`: the schema is refused."""


class _UnsupportedPattern(ValueError):
    """A `pattern` with syntax the converter does not take: the string is left unconstrained."""


def hoist_defs_to_root(schema: dict[str, Any]) -> None:
    """Move `$defs` found anywhere in the schema to its root (llama.cpp's hoist_defs_to_root)."""
    collected: dict[str, Any] = {}

    def collect(node: Any) -> None:
        if not isinstance(node, dict):
            return
        if isinstance(node.get("$defs"), dict):
            for key, value in node["$defs"].items():
                collected.setdefault(key, value)
            del node["$defs"]
        for value in node.values():
            for item in value if isinstance(value, list) else [value]:
                collect(item)

    collect(schema)
    if collected:
        defs = schema.setdefault("$defs", {})
        for key, value in collected.items():
            defs.setdefault(key, value)


class SchemaConverter:
    """llama.cpp's `common_schema_converter`: `resolve_refs`, then `visit`, then `format_grammar`."""

    def __init__(self, *, dotall: bool = False) -> None:
        self.dotall = dotall
        self.rules: dict[str, str] = {"space": SPACE_RULE}
        self.refs: dict[str, Any] = {}
        self.refs_being_resolved: set[str] = set()
        self.errors: list[str] = []

    def add_rule(self, name: str, rule: str) -> str:
        key = INVALID_RULE_CHARS.sub("-", name)
        if key not in self.rules or self.rules[key] == rule:
            self.rules[key] = rule
            return key
        index = 0
        while f"{key}{index}" in self.rules and self.rules[f"{key}{index}"] != rule:
            index += 1
        self.rules[f"{key}{index}"] = rule
        return f"{key}{index}"

    def add_primitive(self, name: str, rule: BuiltinRule) -> str:
        added = self.add_rule(name, rule.content)
        for dependency in rule.deps:
            dependency_rule = PRIMITIVE_RULES.get(dependency) or STRING_FORMAT_RULES.get(dependency)
            if dependency_rule is None:
                self.errors.append(f"Rule {dependency} not known")
            elif dependency not in self.rules:
                self.add_primitive(dependency, dependency_rule)
        return added

    def resolve_refs(self, schema: Any) -> None:
        """Record the target of every local `$ref` (`#/...`); others are errors (no fetching here)."""
        if isinstance(schema, dict):
            hoist_defs_to_root(schema)

        def visit_refs(node: Any) -> None:
            if isinstance(node, list):
                for item in node:
                    visit_refs(item)
                return
            if not isinstance(node, dict):
                return
            if "$ref" not in node:
                for value in node.values():
                    visit_refs(value)
                return
            ref = node["$ref"]
            if not isinstance(ref, str) or ref in self.refs:
                return
            if not ref.startswith("#/"):
                self.errors.append(f"Unsupported ref: {ref}")
                return
            target: Any = schema
            for selector in ref[ref.index("#") + 1 :].split("/")[1:]:
                if isinstance(target, dict) and selector in target:
                    target = target[selector]
                elif isinstance(target, list) and selector.isdigit() and int(selector) < len(target):
                    target = target[int(selector)]
                else:
                    self.errors.append(f"Error resolving ref {ref}: {selector} not in {dump(target)}")
                    return
            self.refs[ref] = target

        visit_refs(schema)

    def _resolve_ref(self, ref: str) -> str:
        fragment = ref[ref.index("#") + 1 :] if "#" in ref else ref
        name = "ref" + INVALID_RULE_CHARS.sub("-", fragment)
        if name not in self.rules and ref not in self.refs_being_resolved:
            self.refs_being_resolved.add(ref)
            name = self.visit(self.refs.get(ref), name)
            self.refs_being_resolved.discard(ref)
        return name

    def _union(self, name: str, alternatives: list[Any]) -> str:
        return " | ".join(
            self.visit(alternative, f"{name}{'-' if name else 'alternative-'}{index}")
            for index, alternative in enumerate(alternatives)
        )

    def visit(self, schema: Any, name: str) -> str:
        """The rule name for `schema` (adding its rules), as llama.cpp's `visit`."""
        if schema is None or schema == []:
            schema = {}  # nlohmann's empty(): a null or an empty array reads as `{}`
        if not isinstance(schema, dict):
            self.errors.append(f"Unrecognized schema: {dump(schema)}")
            return ""
        is_object = True
        get = schema.get
        schema_type = get("type")
        schema_format = get("format") or ""
        rule_name = f"{name}-" if name in RESERVED_NAMES else name or "root"
        if is_object and "$ref" in schema:
            return self.add_rule(rule_name, self._resolve_ref(schema["$ref"]))
        if is_object and ("oneOf" in schema or "anyOf" in schema):
            alternatives = schema["oneOf"] if "oneOf" in schema else schema["anyOf"]
            return self.add_rule(rule_name, self._union(name, list(alternatives)))
        if isinstance(schema_type, list):
            return self.add_rule(rule_name, self._union(name, [{**schema, "type": t} for t in schema_type]))
        if is_object and "const" in schema:
            return self.add_rule(rule_name, format_literal(dump(schema["const"])))
        if is_object and "enum" in schema:
            values = " | ".join(format_literal(dump(value)) for value in schema["enum"])
            return self.add_rule(rule_name, f"({values})")
        untyped = schema_type is None
        if (untyped or schema_type == "object") and (
            "properties" in schema
            or ("additionalProperties" in schema and schema["additionalProperties"] is not True)
        ):
            required = {key for key in get("required") or [] if isinstance(key, str)}
            properties = list((get("properties") or {}).items())
            return self.add_rule(
                rule_name, self._object_rule(properties, required, name, get("additionalProperties"))
            )
        if (untyped or schema_type in ("object", "string")) and "allOf" in schema:
            return self.add_rule(rule_name, self._all_of(schema, name))
        if (untyped or schema_type == "array") and ("items" in schema or "prefixItems" in schema):
            items = schema["items"] if "items" in schema else schema["prefixItems"]
            if isinstance(items, list):
                parts = ' "," space '.join(
                    self.visit(item, f"{name}{'-' if name else ''}tuple-{index}")
                    for index, item in enumerate(items)
                )
                return self.add_rule(rule_name, f'"[" space {parts} space "]"')
            item_rule = self.visit(items, f"{name}{'-' if name else ''}item")
            high = get("maxItems")
            repeated = build_repetition(
                item_rule, int(get("minItems") or 0), high if isinstance(high, int) else INT_MAX, '"," space'
            )
            return self.add_rule(rule_name, f'"[" space {repeated} space "]"')
        if (untyped or schema_type == "string") and "pattern" in schema:
            return self._visit_pattern(str(schema["pattern"]), rule_name)
        if (untyped or schema_type == "string") and UUID_FORMAT.match(schema_format):
            return self.add_primitive(
                "root" if rule_name == "root" else schema_format, PRIMITIVE_RULES["uuid"]
            )
        if (untyped or schema_type == "string") and f"{schema_format}-string" in STRING_FORMAT_RULES:
            primitive = f"{schema_format}-string"
            return self.add_rule(rule_name, self.add_primitive(primitive, STRING_FORMAT_RULES[primitive]))
        if schema_type == "string" and ("minLength" in schema or "maxLength" in schema):
            char_rule = self.add_primitive("char", PRIMITIVE_RULES["char"])
            length = build_repetition(char_rule, int(get("minLength", 0)), int(get("maxLength", INT_MAX)))
            return self.add_rule(rule_name, f'"\\"" {length} "\\""')
        bounds = ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum")
        if schema_type == "integer" and any(key in schema for key in bounds):
            low, high = INT64_MIN, INT64_MAX
            if "minimum" in schema:
                low = int(schema["minimum"])
            elif "exclusiveMinimum" in schema:
                low = int(schema["exclusiveMinimum"]) + 1
            if "maximum" in schema:
                high = int(schema["maximum"])
            elif "exclusiveMaximum" in schema:
                high = int(schema["exclusiveMaximum"]) - 1
            out = ["("]
            build_min_max_int(low, high, out)
            out.append(")")
            return self.add_rule(rule_name, "".join(out))
        if (is_object and not schema) or schema_type == "object":
            return self.add_rule(rule_name, self.add_primitive("object", PRIMITIVE_RULES["object"]))
        if untyped and is_object:
            return self.add_rule(rule_name, self.add_primitive("value", PRIMITIVE_RULES["value"]))
        if not isinstance(schema_type, str) or schema_type not in PRIMITIVE_RULES:
            self.errors.append(f"Unrecognized schema: {dump(schema)}")
            return ""
        return self.add_primitive(
            "root" if rule_name == "root" else schema_type, PRIMITIVE_RULES[schema_type]
        )

    def _all_of(self, schema: dict[str, Any], name: str) -> str:
        required: set[str] = set()
        properties: list[tuple[str, Any]] = []
        enum_counts: dict[str, int] = {}

        def add_component(component: Any, is_required: bool) -> None:
            if not isinstance(component, dict):
                return
            if "$ref" in component:
                add_component(self.refs.get(component["$ref"]), is_required)
            elif "properties" in component:
                for key, value in component["properties"].items():
                    properties.append((key, value))
                    if is_required:
                        required.add(key)
            elif "enum" in component:
                for value in component["enum"]:
                    literal = format_literal(dump(value))
                    enum_counts[literal] = enum_counts.get(literal, 0) + 1

        for part in schema["allOf"]:
            if isinstance(part, dict) and "anyOf" in part:
                for alternative in part["anyOf"]:
                    add_component(alternative, False)
            else:
                add_component(part, True)
        common = [literal for literal, count in sorted(enum_counts.items()) if count == len(schema["allOf"])]
        if common:
            return "(" + " | ".join(common) + ")"
        return self._object_rule(properties, required, name, None)

    def _object_rule(
        self, properties: list[tuple[str, Any]], required: set[str], name: str, additional: Any
    ) -> str:
        prefix = f"{name}-" if name else ""
        kv_rules: dict[str, str] = {}
        required_keys: list[str] = []
        optional_keys: list[str] = []
        for key, value_schema in properties:
            value_rule = self.visit(value_schema, f"{prefix}{key}")
            kv_rules[key] = self.add_rule(
                f"{prefix}{key}-kv", f'{format_literal(dump(key))} space ":" space {value_rule}'
            )
            (required_keys if key in required else optional_keys).append(key)
        if additional is True or isinstance(additional, dict):
            sub_name = f"{prefix}additional"
            value_rule = (
                self.visit(additional, f"{sub_name}-value")
                if isinstance(additional, dict)
                else self.add_primitive("value", PRIMITIVE_RULES["value"])
            )
            names = [key for key, _ in properties]
            key_rule = (
                self.add_rule(f"{sub_name}-k", self._not_strings(names))
                if names
                else self.add_primitive("string", PRIMITIVE_RULES["string"])
            )
            kv_rules["*"] = self.add_rule(f"{sub_name}-kv", f'{key_rule} ":" space {value_rule}')
            optional_keys.append("*")
        rule = '"{" space ' + ' "," space '.join(kv_rules[key] for key in required_keys)
        if optional_keys:
            rule += " ("
            if required_keys:
                rule += ' "," space ( '

            def recursive_refs(keys: list[str], first_is_optional: bool) -> str:
                key, rest = keys[0], keys[1:]
                comma_ref = f'( "," space {kv_rules[key]} )'
                if first_is_optional:
                    result = comma_ref + ("*" if key == "*" else "?")
                else:
                    result = kv_rules[key] + (f" {comma_ref}*" if key == "*" else "")
                if rest:
                    result += " " + self.add_rule(f"{prefix}{key}-rest", recursive_refs(rest, True))
                return result

            rule += " | ".join(recursive_refs(optional_keys[i:], False) for i in range(len(optional_keys)))
            if required_keys:
                rule += " )"
            rule += " )?"
        return rule + ' space "}"'

    def _not_strings(self, strings: list[str]) -> str:
        """A JSON string that is none of `strings` (llama.cpp's _not_strings, a trie)."""
        trie: dict[str, Any] = {}
        for text in strings:
            node = trie
            for char in text:
                node = node.setdefault(char, {})
            node[""] = True  # end of a string
        char_rule = self.add_primitive("char", PRIMITIVE_RULES["char"])
        out = ['["] ( ']

        def visit(node: dict[str, Any]) -> None:
            rejects = ""
            first = True
            for char in sorted(key for key in node if key):
                child = node[char]
                rejects += char
                out.append("" if first else " | ")
                first = False
                out.append(f"[{char}]")
                if any(key for key in child):
                    out.append(" (")
                    visit(child)
                    out.append(")")
                elif "" in child:
                    out.append(f" {char_rule}+")
            if any(key for key in node):
                if not first:
                    out.append(" | ")
                out.append(f'[^"{rejects}] {char_rule}*')

        visit(trie)
        out.append(" )" + ("" if "" in trie else "?") + ' ["]')
        return "".join(out)

    def _visit_pattern(self, pattern: str, name: str) -> str:
        """A JSON string matching a regular expression (llama.cpp's _visit_pattern), with what real Ollama
        0.33 (a newer llama.cpp) does with a pattern it cannot use, as observed: a malformed one is an error
        (`Invalid pattern P: unbalanced parentheses`, `unterminated character class`, `nothing to repeat`);
        one it does not support (a lookaround, a malformed `{...}` quantifier) constrains to any string."""
        try:
            return self._pattern_rule(pattern, name)
        except _UnsupportedPattern:
            return self.add_rule(name, self.add_primitive("string", PRIMITIVE_RULES["string"]))
        except _InvalidPattern as problem:
            self.errors.append(f"Invalid pattern {pattern}: {problem}")
            return ""

    def _pattern_rule(self, pattern: str, name: str) -> str:
        pattern = pattern[1:] if pattern.startswith("^") else ".*" + pattern
        pattern = pattern[:-1] if pattern.endswith("$") else pattern + ".*"
        sub_rule_ids: dict[str, str] = {}
        position = 0
        length = len(pattern)

        def to_rule(item: tuple[str, bool]) -> str:
            text, is_literal = item
            return f'"{text}"' if is_literal else text

        def dot() -> str:
            return self.add_rule("dot", "[\\U00000000-\\U0010FFFF]" if self.dotall else "[^\\x0A\\x0D]")

        def transform() -> tuple[str, bool]:
            nonlocal position
            start = position
            seq: list[tuple[str, bool]] = []

            def join_seq() -> tuple[str, bool]:
                joined: list[tuple[str, bool]] = []
                literal = ""
                for text, is_literal in seq:
                    if is_literal:
                        literal += text
                        continue
                    if literal:
                        joined.append((literal, True))
                        literal = ""
                    joined.append((text, False))
                if literal:
                    joined.append((literal, True))
                return " ".join(to_rule(item) for item in joined), False

            while position < length:
                char = pattern[position]
                if char == ".":
                    seq.append((dot(), False))
                    position += 1
                elif char == "(":
                    position += 1
                    if position < length and pattern[position] == "?":
                        if position + 1 < length and pattern[position + 1] == ":":
                            position += 2
                        else:  # a lookaround
                            raise _UnsupportedPattern
                    seq.append((f"({to_rule(transform())})", False))
                elif char == ")":
                    if start == 0:
                        raise _InvalidPattern("unbalanced parentheses")
                    position += 1
                    return join_seq()
                elif char == "[":
                    brackets = char
                    position += 1
                    while position < length and pattern[position] != "]":
                        step = 2 if pattern[position] == "\\" else 1
                        brackets += pattern[position : position + step]
                        position += step
                    if position >= length:
                        raise _InvalidPattern("unterminated character class")
                    brackets += "]"
                    position += 1
                    seq.append((brackets, False))
                elif char == "|":
                    seq.append(("|", False))
                    position += 1
                elif char in "*+?":
                    if not seq or seq[-1] == ("|", False):
                        raise _InvalidPattern("nothing to repeat")
                    seq[-1] = (to_rule(seq[-1]) + char, False)
                    position += 1
                elif char == "{":
                    braces = char
                    position += 1
                    while position < length and pattern[position] != "}":
                        braces += pattern[position]
                        position += 1
                    if position >= length:
                        raise _UnsupportedPattern
                    position += 1
                    numbers = [number.strip() for number in braces[1:].split(",")]
                    try:
                        if len(numbers) == 1:
                            low = high = int(numbers[0])
                        elif len(numbers) == 2:
                            low = int(numbers[0]) if numbers[0] else 0
                            high = int(numbers[1]) if numbers[1] else INT_MAX
                        else:
                            raise _UnsupportedPattern
                    except ValueError:
                        raise _UnsupportedPattern from None
                    if not seq:
                        raise _InvalidPattern("nothing to repeat")
                    sub, sub_is_literal = seq[-1]
                    if not sub_is_literal:
                        if sub not in sub_rule_ids:
                            sub_rule_ids[sub] = self.add_rule(f"{name}-{len(sub_rule_ids) + 1}", sub)
                        sub = sub_rule_ids[sub]
                    seq[-1] = (build_repetition(f'"{sub}"' if sub_is_literal else sub, low, high), False)
                else:
                    literal = ""
                    while position < length:
                        current = pattern[position]
                        if current == "\\" and position < length - 1:
                            following = pattern[position + 1]
                            if following in ESCAPED_IN_REGEXPS_BUT_NOT_IN_LITERALS:
                                literal += following
                            else:
                                literal += pattern[position : position + 2]
                            position += 2
                        elif current == '"':
                            literal += '\\"'
                            position += 1
                        elif current not in NON_LITERAL_SET and (
                            position == length - 1
                            or not literal
                            or pattern[position + 1] == "."
                            or pattern[position + 1] not in NON_LITERAL_SET
                        ):
                            literal += current
                            position += 1
                        else:
                            break
                    if literal:
                        seq.append((literal, True))
            if start > 0:  # the end of the pattern inside a group
                raise _InvalidPattern("unbalanced parentheses")
            return join_seq()

        return self.add_rule(name, '"\\"" (' + to_rule(transform()) + ') "\\""')

    def format_grammar(self) -> str:
        return "".join(f"{name} ::= {rule}\n" for name, rule in sorted(self.rules.items()))


def json_schema_to_grammar(schema: Any) -> str:
    """GBNF for a JSON schema, as llama.cpp's json_schema_to_grammar(schema, force_gbnf=true) writes it.

    Raises SchemaConversionError with llama.cpp's text when the schema cannot be converted."""
    converter = SchemaConverter()
    copy = json.loads(json.dumps(schema))  # resolve_refs edits the schema it works on
    converter.resolve_refs(copy)
    converter.visit(copy, "")
    if converter.errors:
        raise SchemaConversionError("JSON schema conversion failed:\n" + "\n".join(converter.errors))
    return converter.format_grammar()

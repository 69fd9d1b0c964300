"""Contract validation as Spark column expressions, generated from `contracts/`.

The JSON value is parsed once into a VARIANT, which keeps the JSON type of every field: that is what
lets Spark apply the same rules as `contracts.validate` (a string "5" is not an int, 1.0 is not an
int, true is not a number, unknown fields are violations) instead of from_json's lenient coercion
and silent nulls. Everything runs in the JVM; no Python UDF touches a row.

Messages follow `contracts.Violation`: "field=value: rule", joined with "; ".

Before any of that, the bytes must be a record's JSON text as `contracts.jsontext` defines it for
the bridge too (UTF-8, bounded nesting, exactly one JSON value, no NaN, no duplicate key): `parse`
gives null otherwise and `json_problem` says why, with the bridge's reason code.
"""
from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import VariantType

from smartcity.contracts import RecordType, record_type
from smartcity.contracts import jsontext as J
from smartcity.contracts import schema as cs

INT_KINDS = ("TINYINT", "SMALLINT", "INT", "BIGINT")
TS_REGEX = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$"
TS_FORMAT = "yyyy-MM-dd'T'HH:mm:ss.SSS'Z'"


# Jackson as strict as RFC 8259 and json.loads (from_json's defaults allow single quotes and
# NaN); nesting bounded one level above contracts.jsontext.MAX_DEPTH for the array around the text.
JSON_OPTIONS = {
    "maxNestingDepth": str(J.MAX_DEPTH + 1), "maxNumLen": str(J.MAX_NUMBER_DIGITS),
    "allowNonNumericNumbers": "false", "allowSingleQuotes": "false", "allowComments": "false",
    "allowUnquotedFieldNames": "false", "allowNumericLeadingZeros": "false",
    "allowBackslashEscapingAnyCharacter": "false", "allowUnquotedControlChars": "false",
}


def _nonce(value: Column) -> Column:
    return F.xxhash64(value).cast("string")


def _wrapped(value: Column) -> Column:
    """`[<text>,"<hash of the bytes>"]`. Spark's JSON parsers stop after the first value and ignore
    what follows, so `{...} garbage` would pass; inside this array, anything after the value is
    either a syntax error or an element before the hash (a payload cannot contain its own hash)."""
    return F.concat(F.lit("["), value.cast("string"), F.lit(',"'), _nonce(value), F.lit('"]'))


def _lone_surrogate(text: Column) -> Column:
    return (text.contains("\\") & text.rlike(J.SURROGATE_ESCAPE_PATTERN)
            & text.rlike(J.LONE_SURROGATE_PATTERN))


def parse(value: Column) -> Column:
    """Kafka value (binary) -> VARIANT, or null when it is not a record's JSON text
    (contracts.jsontext: invalid UTF-8, a lone surrogate escape, nesting beyond MAX_DEPTH, not
    exactly one JSON value, NaN/Infinity, a duplicate key; json_problem says which)."""
    text = value.cast("string")
    arr = F.from_json(_wrapped(value), VariantType(), JSON_OPTIONS)
    one = ((F.try_variant_get(arr, "$[1]", "string") == _nonce(value))
           & F.try_variant_get(arr, "$[2]", "variant").isNull())
    return F.when(F.is_valid_utf8(text) & ~_lone_surrogate(text) & one,
                  F.try_variant_get(arr, "$[0]", "variant"))


def json_depth(text: Column) -> Column:
    """contracts.jsontext.depth in Spark: brackets outside strings, the deepest prefix. A linear
    aggregate (row by row, outside code generation): only for rows `parse` already rejected."""
    brackets = F.translate(F.regexp_replace(F.regexp_replace(text, J.STRING_PATTERN, ""),
                                            r"[^\[\]{}]", ""), "{}", "[]")
    start = F.struct(F.lit(0).alias("d"), F.lit(0).alias("m"))

    def step(acc: Column, c: Column) -> Column:
        d = acc["d"] + F.when(c == "[", 1).otherwise(-1)
        return F.struct(d.alias("d"), F.greatest(acc["m"], d).alias("m"))
    return F.aggregate(F.split(brackets, ""), start, step, lambda acc: acc["m"])


def json_problem(value: Column) -> Column:
    """Why `parse(value)` is null, as "<reason>: <detail>" with contracts.jsontext's reasons (the
    bridge's dead-letter reasons), checked in the same order. Meaningful only where parse(value)
    is null and value is not: Spark evaluates it only for the rows that take that branch."""
    text = value.cast("string")
    d = json_depth(text)
    loose = F.from_json(_wrapped(value), "array<string>", JSON_OPTIONS)  # duplicate keys allowed
    one = (F.size(loose) == 2) & (F.element_at(loose, 2) == _nonce(value))
    return (F.when(~F.is_valid_utf8(text), F.lit(f"{J.NOT_JSON}: not valid UTF-8"))
            .when(_lone_surrogate(text), F.lit(f"{J.NOT_JSON}: a \\u escape is a lone surrogate: not valid Unicode"))
            .when(d > J.MAX_DEPTH, F.concat(F.lit(f"{J.TOO_DEEP}: nesting depth "), d.cast("string"),
                                            F.lit(f" > limit {J.MAX_DEPTH}")))
            .when(F.regexp_replace(text, J.STRING_PATTERN, "").rlike("NaN|Infinity"),
                  F.lit(f"{J.NOT_JSON}: NaN or Infinity is not JSON (RFC 8259 has neither)"))
            .when(F.coalesce(~one, F.lit(True)),
                  F.lit(f"{J.NOT_JSON}: not exactly one JSON value (syntax, data after it, a number of more than "
                        f"{J.MAX_NUMBER_DIGITS} digits or a key of more than {J.MAX_NAME_LENGTH} characters)"))
            .otherwise(F.lit(f"{J.DUPLICATE_KEY}: an object has the same key twice")))


def _field(v: Column, name: str) -> Column:
    # Missing field -> SQL NULL; JSON null -> a VARIANT whose kind is VOID.
    return F.try_variant_get(v, f"$.{name}", "variant")


def _kind(x: Column) -> Column:
    return F.schema_of_variant(x)


def _pytype(kind: Column) -> Column:
    """The Python type name json.loads would give, so messages read like contracts' own."""
    return (F.when(kind.isin(*INT_KINDS), "int")
            .when(kind.startswith("DECIMAL") | kind.isin("DOUBLE", "FLOAT"), "float")
            .when(kind == "STRING", "str")
            .when(kind == "BOOLEAN", "bool")
            .when(kind.startswith("OBJECT"), "dict")
            .when(kind.startswith("ARRAY"), "list")
            .otherwise(F.lower(kind)))


def _num_text(x: float | int) -> str:
    return str(x)


def _value(f: cs.Field, x: Column) -> Column:
    """The field's VARIANT `x` as the SQL type its rules compare (null when it is not one)."""
    if f.type in (cs.STRING, cs.TIMESTAMP):
        return F.try_variant_get(x, "$", "string")
    if f.type in (cs.INT, cs.LONG):
        return F.try_variant_get(x, "$", "bigint")
    if f.type == cs.DOUBLE:
        return F.try_variant_get(x, "$", "double")
    raise ValueError(f"no Spark validation for logical type {f.type!r} of field {f.name}")


def field_violation(f: cs.Field, v: Column) -> Column:
    """One message (or null) for field `f`: the first rule it breaks, in contracts' order."""
    x = _field(v, f.name)
    return _field_rules(f, x, _kind(x), _value(f, x))


def _field_rules(f: cs.Field, x: Column, kind: Column, val: Column) -> Column:
    """field_violation given the field's VARIANT `x`, its kind and its `_value`."""
    shown = F.substring(F.to_json(x), 1, 80)

    def msg(rule: str | Column) -> Column:
        return F.concat(F.lit(f"{f.name}="), shown, F.lit(": "),
                        rule if isinstance(rule, Column) else F.lit(rule))

    chain = F.when(x.isNull(), F.lit(None if f.nullable else f"{f.name}=None: required field is missing"))
    chain = chain.when(kind == "VOID",
                       F.lit(None if f.nullable else f"{f.name}=None: required, must not be null"))
    t = f.type
    if t in (cs.STRING, cs.TIMESTAMP):
        chain = chain.when(kind != "STRING", msg(F.concat(F.lit("must be a string, got "), _pytype(kind))))
        if t == cs.TIMESTAMP:
            chain = chain.when(~val.rlike(TS_REGEX),
                               msg("must be UTC ISO-8601 with milliseconds and Z (YYYY-MM-DDTHH:MM:SS.sssZ)"))
            chain = chain.when(F.try_to_timestamp(val, F.lit(TS_FORMAT)).isNull(),
                               msg("not a valid calendar date/time"))
        if f.max_length is not None:
            chain = chain.when(F.length(val) > f.max_length, msg(f"longer than {f.max_length} characters"))
        if f.pattern is not None:
            chain = chain.when(~val.rlike(f.pattern), msg(f"must match {f.pattern}"))
    elif t in (cs.INT, cs.LONG):
        chain = chain.when(~kind.isin(*INT_KINDS), msg(F.concat(F.lit("must be an integer, got "), _pytype(kind))))
        if t == cs.INT:
            # Python ints are unbounded; the lake column is 32-bit, so say so rather than overflow.
            lo, hi = cs.INT_RANGE[cs.INT]
            chain = chain.when((val < lo) | (val > hi), msg("out of range for a 32-bit int"))
    elif t == cs.DOUBLE:
        numeric = kind.isin(*INT_KINDS, "DOUBLE", "FLOAT") | kind.startswith("DECIMAL")
        chain = chain.when(~numeric, msg(F.concat(F.lit("must be a number, got "), _pytype(kind))))
        chain = chain.when(F.isnan(val) | (F.abs(val) == float("inf")), msg("must be finite"))
    else:
        raise ValueError(f"no Spark validation for logical type {t!r} of field {f.name}")
    if f.enum is not None:
        chain = chain.when(~val.isin(*f.enum), msg(f"must be one of {list(f.enum)}"))
    if f.minimum is not None:
        chain = chain.when(val < f.minimum, msg(f"must be >= {_num_text(f.minimum)}"))
    if f.maximum is not None:
        chain = chain.when(val > f.maximum, msg(f"must be <= {_num_text(f.maximum)}"))
    return chain


def messages(rt: RecordType | str, v: Column) -> list[Column]:
    """One column per field (null or its violation message), then one for unknown fields."""
    rt = record_type(rt) if isinstance(rt, str) else rt
    keys = F.map_keys(F.try_variant_get(v, "$", "map<string,variant>"))
    return [field_violation(f, v) for f in rt.fields] + [_unknown(rt, keys)]


def _unknown(rt: RecordType, keys: Column) -> Column:
    known = F.array(*[F.lit(n) for n in rt.field_names])
    unknown = F.array_except(keys, known)
    return F.when(F.size(unknown) > 0, F.concat(
        F.array_join(unknown, ": unknown field; "), F.lit(": unknown field")))


def violations(rt: RecordType | str, v: Column) -> Column:
    """Every violation of record type `rt` by the parsed object `v`, joined with "; ";
    "" when valid. Built without higher-order functions (filter/transform are evaluated
    row by row outside code generation, which made validation ~10x slower)."""
    return F.concat_ws("; ", *messages(rt, v))


def with_violations(df: DataFrame, rt: RecordType | str, v: str, out: str) -> DataFrame:
    """`df` plus column `out` = violations(rt, df[v]), the same strings, computed in two projections
    so that no generated method outgrows the JVM's 64 KB limit (Spark then evaluates the whole
    stage interpreted): the first extracts each field once (its VARIANT, kind and typed value, plus
    the object's keys), the second applies the rules to those columns."""
    rt = record_type(rt) if isinstance(rt, str) else rt
    hidden: list[str] = []
    cols: list[Column] = []
    for i, f in enumerate(rt.fields):
        x = _field(F.col(v), f.name)
        names = [f"__vx{i}", f"__vk{i}", f"__vv{i}"]
        cols += [x.alias(names[0]), _kind(x).alias(names[1]), _value(f, x).alias(names[2])]
        hidden += names
    cols.append(F.map_keys(F.try_variant_get(F.col(v), "$", "map<string,variant>")).alias("__vkeys"))
    hidden.append("__vkeys")
    d = df.select("*", *cols)
    msgs = [_field_rules(f, F.col(f"__vx{i}"), F.col(f"__vk{i}"), F.col(f"__vv{i}"))
            for i, f in enumerate(rt.fields)]
    msgs.append(_unknown(rt, F.col("__vkeys")))
    return d.withColumn(out, F.concat_ws("; ", *msgs)).drop(*hidden)


def _holds(f: cs.Field, x: Column) -> Column:
    """The rules of `f` on a typed, non-null value (booleans only: no messages on the fast path)."""
    conds: list[Column] = []
    if f.type == cs.TIMESTAMP:
        conds += [x.rlike(TS_REGEX), F.try_to_timestamp(x, F.lit(TS_FORMAT)).isNotNull()]
    if f.max_length is not None:
        conds.append(F.length(x) <= f.max_length)
    if f.pattern is not None:
        conds.append(x.rlike(f.pattern))
    if f.type == cs.DOUBLE:
        conds.append(~F.isnan(x) & (F.abs(x) != float("inf")))
    if f.enum is not None:
        conds.append(x.isin(*f.enum))
    if f.minimum is not None:
        conds.append(x >= f.minimum)
    if f.maximum is not None:
        conds.append(x <= f.maximum)
    ok = F.lit(True)
    for c in conds:
        ok = ok & c
    return ok


def conforms(rt: RecordType | str, value: Column, st: Column) -> Column:
    """True only when `value` (the Kafka bytes) is a valid record in the canonical wire encoding
    (contracts.wire), proven without asking each value for its JSON type: `st` is
    from_json(value, wire_struct(rt)); writing it back must give exactly the same bytes (so every
    field is present, in order, with the type the contract says, and nothing else is there), and
    every rule must hold on the typed values. False means "not proven": the row then takes the full
    VARIANT path (violations), which accepts any valid JSON and explains every rejection."""
    rt = record_type(rt) if isinstance(rt, str) else rt
    same = F.to_json(st, {"ignoreNullFields": "false"}) == value.cast("string")
    ok = F.coalesce(same, F.lit(False))
    for f in rt.fields:
        x = st[f.name]
        ok = ok & ((x.isNull() | _holds(f, x)) if f.nullable else (x.isNotNull() & _holds(f, x)))
    return ok


def typed_value(f: cs.Field, v: Column) -> Column:
    """The field's value in its lake type (call only on valid rows)."""
    if f.type == cs.TIMESTAMP:
        return F.try_to_timestamp(F.try_variant_get(v, f"$.{f.name}", "string"), F.lit(TS_FORMAT))
    from .schemas import spark_type
    return F.try_variant_get(v, f"$.{f.name}", spark_type(f).simpleString())


def typed_columns(rt: RecordType | str, v: Column) -> list[Column]:
    rt = record_type(rt) if isinstance(rt, str) else rt
    return [typed_value(f, v).alias(f.name) for f in rt.fields]

//! The JSON Schema subset the crate documentation lists. [`Schema::new`] admits a schema that
//! uses only supported keywords with well-formed arguments, compiling it into a tree the checker
//! walks without looking keywords up, and [`Schema::check`] checks a value against it.
//!
//! Both report the first violation in document order, taking an object's members in sorted-key
//! order (serde_json's map is a BTreeMap without its `preserve_order` feature), so every replica
//! reports the same one.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Number, Value};

/// The names `type` accepts.
const TYPES: [&str; 7] = [
    "null", "boolean", "object", "array", "number", "integer", "string",
];

/// Keywords accepted and ignored: they describe a value without constraining it.
const ANNOTATIONS: [&str; 8] = [
    "$schema",
    "$id",
    "title",
    "description",
    "default",
    "examples",
    "$comment",
    "format",
];

/// How long a value shown in a message may get: a reason names the value, it does not repeat it.
const SHOWN_CHARS: usize = 64;

/// A schema [`Schema::new`] admitted.
pub struct Schema(Node);

impl Schema {
    /// Admits `schema` if it is `true`, `false`, or an object using only supported keywords
    /// with well-formed arguments; otherwise says what is wrong, and where in `schema`.
    pub fn new(schema: &Value) -> Result<Schema, Violation> {
        Ok(Schema(Node::compile(schema, &Location::Root)?))
    }

    /// Passes `value` if it satisfies the schema; otherwise names its first violation.
    pub fn check(&self, value: &Value) -> Result<(), Violation> {
        self.0.first_violation(value, &Location::Root)
    }
}

/// What is wrong, and where: a path into the value (or schema) checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    path: Vec<Segment>,
    message: String,
}

impl Violation {
    /// Where, as a JSON pointer: `/` for the root, `/servers/0/port` below it.
    pub fn pointer(&self) -> String {
        if self.path.is_empty() {
            return "/".into();
        }
        self.path
            .iter()
            .map(|segment| match segment {
                Segment::Member(name) => format!("/{}", name.replace('~', "~0").replace('/', "~1")),
                Segment::Element(index) => format!("/{index}"),
            })
            .collect()
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.pointer(), self.message)
    }
}

/// One step down a path. Siblings are all members or all elements, so the derived order, applied
/// to whole paths, is document order: a node before what it contains, siblings in order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Segment {
    Member(String),
    Element(usize),
}

/// Where the checker is: a chain back to the root, kept on the stack as the checker descends and
/// copied into a [`Violation`] only when there is one.
enum Location<'a> {
    Root,
    Member(&'a Location<'a>, &'a str),
    Element(&'a Location<'a>, usize),
}

impl<'a> Location<'a> {
    fn member(&'a self, name: &'a str) -> Location<'a> {
        Location::Member(self, name)
    }

    fn element(&'a self, index: usize) -> Location<'a> {
        Location::Element(self, index)
    }

    fn violation(&self, message: impl Into<String>) -> Violation {
        let mut path = Vec::new();
        let mut at = self;
        loop {
            match at {
                Location::Root => break,
                Location::Member(parent, name) => {
                    path.push(Segment::Member(name.to_string()));
                    at = parent;
                }
                Location::Element(parent, index) => {
                    path.push(Segment::Element(*index));
                    at = parent;
                }
            }
        }
        path.reverse();
        Violation {
            path,
            message: message.into(),
        }
    }
}

/// A compiled schema.
enum Node {
    /// `true` admits every value, `false` none.
    Trivial(bool),
    Keywords(Box<Keywords>),
}

/// A schema object's constraints; an absent keyword leaves its field empty.
#[derive(Default)]
struct Keywords {
    types: Vec<&'static str>,
    constant: Option<Value>,
    options: Option<Vec<Value>>,
    minimum: Option<Number>,
    maximum: Option<Number>,
    exclusive_minimum: Option<Number>,
    exclusive_maximum: Option<Number>,
    length: Limits,
    item_count: Limits,
    property_count: Limits,
    unique_items: bool,
    required: Vec<String>,
    properties: BTreeMap<String, Node>,
    additional_properties: Option<Node>,
    items: Option<Node>,
    all_of: Vec<Node>,
    any_of: Vec<Node>,
    one_of: Vec<Node>,
    not: Option<Node>,
}

/// The bounds of a size: a string's length, an array's or an object's count.
#[derive(Default)]
struct Limits {
    min: Option<u64>,
    max: Option<u64>,
}

/// What a size counts, in the singular and the plural.
type Unit = (&'static str, &'static str);

const CHARACTERS: Unit = ("character", "characters");
const ITEMS: Unit = ("item", "items");
const PROPERTIES: Unit = ("property", "properties");

impl Node {
    fn compile(schema: &Value, here: &Location) -> Result<Node, Violation> {
        let members = match schema {
            Value::Bool(admits) => return Ok(Node::Trivial(*admits)),
            Value::Object(members) => members,
            other => {
                return Err(here.violation(format!(
                    "expected a schema (an object or a boolean), found {}",
                    describe(other)
                )));
            }
        };
        let mut keywords = Keywords::default();
        for (keyword, argument) in members {
            keywords.compile(keyword, argument, here)?;
        }
        Ok(Node::Keywords(Box::new(keywords)))
    }

    /// The first violation of the schema by `value`, in document order.
    fn first_violation(&self, value: &Value, here: &Location) -> Result<(), Violation> {
        match self {
            Node::Trivial(true) => Ok(()),
            Node::Trivial(false) => Err(here.violation("no value is allowed here")),
            Node::Keywords(keywords) => keywords.first_violation(value, here),
        }
    }

    fn admits(&self, value: &Value) -> bool {
        self.first_violation(value, &Location::Root).is_ok()
    }
}

impl Keywords {
    /// Takes in one keyword of the schema at `here`. A bad argument is reported at the schema,
    /// naming the keyword, as an unknown keyword is; subschemas are compiled where they are.
    fn compile(
        &mut self,
        keyword: &str,
        argument: &Value,
        here: &Location,
    ) -> Result<(), Violation> {
        let malformed = |expected: &str| {
            here.violation(format!(
                "{keyword:?} must be {expected}, found {}",
                show(argument)
            ))
        };
        let as_number = || {
            argument
                .as_number()
                .cloned()
                .ok_or_else(|| malformed("a number"))
        };
        let as_count = || count(argument).ok_or_else(|| malformed("a non-negative integer"));
        let as_schemas = || match argument {
            Value::Array(schemas) if !schemas.is_empty() => Ok(schemas.as_slice()),
            _ => Err(malformed("a non-empty array of schemas")),
        };
        let within = here.member(keyword);
        match keyword {
            "type" => {
                self.types = type_names(argument)
                    .ok_or_else(|| malformed("a type name or a non-empty array of them"))?;
            }
            "enum" => {
                let options = argument.as_array().ok_or_else(|| malformed("an array"))?;
                self.options = Some(options.clone());
            }
            "const" => self.constant = Some(argument.clone()),
            "minimum" => self.minimum = Some(as_number()?),
            "maximum" => self.maximum = Some(as_number()?),
            "exclusiveMinimum" => self.exclusive_minimum = Some(as_number()?),
            "exclusiveMaximum" => self.exclusive_maximum = Some(as_number()?),
            "minLength" => self.length.min = Some(as_count()?),
            "maxLength" => self.length.max = Some(as_count()?),
            "minItems" => self.item_count.min = Some(as_count()?),
            "maxItems" => self.item_count.max = Some(as_count()?),
            "minProperties" => self.property_count.min = Some(as_count()?),
            "maxProperties" => self.property_count.max = Some(as_count()?),
            "uniqueItems" => {
                self.unique_items = argument.as_bool().ok_or_else(|| malformed("a boolean"))?;
            }
            "required" => {
                self.required =
                    strings(argument).ok_or_else(|| malformed("an array of strings"))?;
            }
            "properties" => {
                let schemas = argument
                    .as_object()
                    .ok_or_else(|| malformed("an object of schemas"))?;
                self.properties = compile_members(schemas, &within)?;
            }
            "additionalProperties" => {
                self.additional_properties = Some(Node::compile(argument, &within)?)
            }
            "items" => self.items = Some(Node::compile(argument, &within)?),
            "not" => self.not = Some(Node::compile(argument, &within)?),
            "allOf" => self.all_of = compile_elements(as_schemas()?, &within)?,
            "anyOf" => self.any_of = compile_elements(as_schemas()?, &within)?,
            "oneOf" => self.one_of = compile_elements(as_schemas()?, &within)?,
            _ if ANNOTATIONS.contains(&keyword) => {}
            _ => return Err(here.violation(format!("unsupported keyword {keyword:?}"))),
        }
        Ok(())
    }

    /// The constraints on the value itself come first, since the value precedes its contents;
    /// then whichever of `allOf`'s and the members' or elements' violations comes first.
    fn first_violation(&self, value: &Value, here: &Location) -> Result<(), Violation> {
        self.check_value(value, here)?;
        let in_all_of = self
            .all_of
            .iter()
            .map(|schema| schema.first_violation(value, here).err())
            .fold(None, earliest);
        let in_contents = self.check_contents(value, here).err();
        match earliest(in_all_of, in_contents) {
            Some(violation) => Err(violation),
            None => Ok(()),
        }
    }

    fn check_value(&self, value: &Value, here: &Location) -> Result<(), Violation> {
        self.check_type(value, here)?;
        self.check_const_and_enum(value, here)?;
        match value {
            Value::Number(number) => self.check_bounds(number, here)?,
            Value::String(string) => {
                self.length
                    .check(|| string.chars().count(), CHARACTERS, here)?
            }
            Value::Array(elements) => {
                self.item_count.check(|| elements.len(), ITEMS, here)?;
                self.check_unique(elements, here)?;
            }
            Value::Object(members) => {
                self.property_count
                    .check(|| members.len(), PROPERTIES, here)?;
                self.check_required(members, here)?;
            }
            Value::Null | Value::Bool(_) => {}
        }
        self.check_any_one_not(value, here)
    }

    fn check_type(&self, value: &Value, here: &Location) -> Result<(), Violation> {
        if self.types.is_empty() || self.types.iter().any(|name| has_type(value, name)) {
            return Ok(());
        }
        Err(here.violation(format!(
            "expected {}, found {}",
            alternatives(&self.types),
            describe(value)
        )))
    }

    fn check_const_and_enum(&self, value: &Value, here: &Location) -> Result<(), Violation> {
        if let Some(constant) = &self.constant
            && !equal(value, constant)
        {
            return Err(here.violation(format!(
                "expected {}, found {}",
                show(constant),
                show(value)
            )));
        }
        if let Some(options) = &self.options
            && !options.iter().any(|option| equal(value, option))
        {
            return Err(here.violation(format!(
                "{} is not one of {}",
                show(value),
                show(&Value::Array(options.clone()))
            )));
        }
        Ok(())
    }

    fn check_bounds(&self, number: &Number, here: &Location) -> Result<(), Violation> {
        use Ordering::{Equal, Greater, Less};
        // Each bound, the orderings of a number against it that it admits, and what a number
        // ordered otherwise is.
        let bounds: [(&Option<Number>, &[Ordering], &str); 4] = [
            (&self.minimum, &[Equal, Greater], "is below the minimum"),
            (&self.maximum, &[Less, Equal], "is above the maximum"),
            (
                &self.exclusive_minimum,
                &[Greater],
                "is not above the exclusive minimum",
            ),
            (
                &self.exclusive_maximum,
                &[Less],
                "is not below the exclusive maximum",
            ),
        ];
        for (bound, admitted, outside) in bounds {
            if let Some(bound) = bound
                && !admitted.contains(&compare(number, bound))
            {
                return Err(here.violation(format!("{number} {outside} {bound}")));
            }
        }
        Ok(())
    }

    fn check_unique(&self, elements: &[Value], here: &Location) -> Result<(), Violation> {
        match self
            .unique_items
            .then(|| first_duplicate(elements))
            .flatten()
        {
            Some((earlier, later)) => {
                Err(here.violation(format!("items {earlier} and {later} are equal")))
            }
            None => Ok(()),
        }
    }

    fn check_required(
        &self,
        members: &Map<String, Value>,
        here: &Location,
    ) -> Result<(), Violation> {
        match self
            .required
            .iter()
            .find(|name| !members.contains_key(*name))
        {
            Some(missing) => Err(here.violation(format!("missing required property {missing:?}"))),
            None => Ok(()),
        }
    }

    /// `anyOf`, `oneOf` and `not` judge the value as a whole, so their violations are the
    /// value's own.
    fn check_any_one_not(&self, value: &Value, here: &Location) -> Result<(), Violation> {
        if !self.any_of.is_empty() && !self.any_of.iter().any(|schema| schema.admits(value)) {
            return Err(here.violation("matches none of the anyOf schemas"));
        }
        if !self.one_of.is_empty() {
            let matching: Vec<usize> = (0..self.one_of.len())
                .filter(|&index| self.one_of[index].admits(value))
                .take(2)
                .collect();
            match matching[..] {
                [] => return Err(here.violation("matches none of the oneOf schemas")),
                [first, second] => {
                    return Err(here.violation(format!(
                        "matches oneOf schemas {first} and {second}, not exactly one"
                    )));
                }
                _ => {}
            }
        }
        if let Some(schema) = &self.not
            && schema.admits(value)
        {
            return Err(here.violation("matches the schema under \"not\""));
        }
        Ok(())
    }

    /// Members against `properties` or `additionalProperties`, elements against `items`; the
    /// first member or element in document order with a violation holds the first violation.
    fn check_contents(&self, value: &Value, here: &Location) -> Result<(), Violation> {
        match (value, &self.items) {
            (Value::Object(members), _) => self.check_members(members, here),
            (Value::Array(elements), Some(schema)) => {
                elements
                    .iter()
                    .enumerate()
                    .try_for_each(|(index, element)| {
                        schema.first_violation(element, &here.element(index))
                    })
            }
            _ => Ok(()),
        }
    }

    fn check_members(
        &self,
        members: &Map<String, Value>,
        here: &Location,
    ) -> Result<(), Violation> {
        for (name, member) in members {
            let at = here.member(name);
            let schema = match (self.properties.get(name), &self.additional_properties) {
                (Some(schema), _) => schema,
                // The common case of `false` gets a reason that says which keyword refused it.
                (None, Some(Node::Trivial(false))) => {
                    return Err(
                        at.violation("property not allowed (additionalProperties is false)")
                    );
                }
                (None, Some(schema)) => schema,
                (None, None) => continue,
            };
            schema.first_violation(member, &at)?;
        }
        Ok(())
    }
}

impl Limits {
    /// Checks the size `measure` gives, measuring only when there is a bound.
    fn check(
        &self,
        measure: impl FnOnce() -> usize,
        (unit, units): Unit,
        here: &Location,
    ) -> Result<(), Violation> {
        if self.min.is_none() && self.max.is_none() {
            return Ok(());
        }
        let size = measure() as u64;
        let (limit, beyond) = match (self.min, self.max) {
            (Some(min), _) if size < min => (min, "fewer than the minimum"),
            (_, Some(max)) if size > max => (max, "more than the maximum"),
            _ => return Ok(()),
        };
        let counted = if size == 1 { unit } else { units };
        Err(here.violation(format!("has {size} {counted}, {beyond} {limit}")))
    }
}

fn compile_members(
    schemas: &Map<String, Value>,
    within: &Location,
) -> Result<BTreeMap<String, Node>, Violation> {
    schemas
        .iter()
        .map(|(name, schema)| Ok((name.clone(), Node::compile(schema, &within.member(name))?)))
        .collect()
}

fn compile_elements(schemas: &[Value], within: &Location) -> Result<Vec<Node>, Violation> {
    schemas
        .iter()
        .enumerate()
        .map(|(index, schema)| Node::compile(schema, &within.element(index)))
        .collect()
}

/// `type`'s argument as names from [`TYPES`], if it is one or a non-empty array of them.
fn type_names(argument: &Value) -> Option<Vec<&'static str>> {
    let type_name = |name: &Value| {
        TYPES
            .iter()
            .copied()
            .find(|&known| name.as_str() == Some(known))
    };
    match argument {
        Value::Array(names) if !names.is_empty() => names.iter().map(type_name).collect(),
        Value::Array(_) => None,
        name => Some(vec![type_name(name)?]),
    }
}

fn strings(argument: &Value) -> Option<Vec<String>> {
    argument
        .as_array()?
        .iter()
        .map(|element| element.as_str().map(str::to_string))
        .collect()
}

/// A non-negative integer, which (as everywhere here) may be written with a zero fraction.
fn count(argument: &Value) -> Option<u64> {
    let number = argument.as_number()?;
    number.as_u64().or_else(|| {
        let float = number.as_f64()?;
        (float >= 0.0 && float.fract() == 0.0).then_some(float as u64)
    })
}

fn earliest(a: Option<Violation>, b: Option<Violation>) -> Option<Violation> {
    match (a, b) {
        (Some(a), Some(b)) if b.path < a.path => Some(b),
        (a, b) => a.or(b),
    }
}

fn has_type(value: &Value, name: &str) -> bool {
    match (name, value) {
        ("null", Value::Null)
        | ("boolean", Value::Bool(_))
        | ("object", Value::Object(_))
        | ("array", Value::Array(_))
        | ("number", Value::Number(_))
        | ("string", Value::String(_)) => true,
        ("integer", Value::Number(number)) => is_integer(number),
        _ => false,
    }
}

/// Whether `number` has no fractional part, however it is written (`1` and `1.0` both do).
fn is_integer(number: &Number) -> bool {
    number.is_i64() || number.is_u64() || number.as_f64().is_some_and(|f| f.fract() == 0.0)
}

/// `a`, `a or b`, `a, b or c`.
fn alternatives(names: &[&str]) -> String {
    match names {
        [init @ .., last] if !init.is_empty() => format!("{} or {last}", init.join(", ")),
        _ => names.concat(),
    }
}

/// The first pair of equal elements: the earliest element equal to one before it, and the first
/// such one before it. Sorting makes this O(n log n) where comparing every pair would be O(n²).
fn first_duplicate(elements: &[Value]) -> Option<(usize, usize)> {
    let mut sorted: Vec<usize> = (0..elements.len()).collect();
    // Stable, so equal elements stay in index order and each run of them starts with its first.
    sorted.sort_by(|&a, &b| order(&elements[a], &elements[b]));
    sorted
        .windows(2)
        .map(|pair| (pair[0], pair[1]))
        .filter(|&(a, b)| equal(&elements[a], &elements[b]))
        .min_by_key(|&(_, later)| later)
}

/// JSON equality with numbers compared by value, so `1` equals `1.0`.
fn equal(a: &Value, b: &Value) -> bool {
    order(a, b) == Ordering::Equal
}

/// A total order on JSON values that is [`equal`] exactly where they are equal: by type, then
/// numbers by value, strings by bytes, arrays and objects (members in key order) element by
/// element.
fn order(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Bool(a), Value::Bool(b)) => a.cmp(b),
        (Value::Number(a), Value::Number(b)) => compare(a, b),
        (Value::String(a), Value::String(b)) => a.cmp(b),
        (Value::Array(a), Value::Array(b)) => {
            in_turn(a.iter().zip(b).map(|(a, b)| order(a, b))).then(a.len().cmp(&b.len()))
        }
        (Value::Object(a), Value::Object(b)) => in_turn(
            a.iter()
                .zip(b)
                .map(|((a_name, a), (b_name, b))| a_name.cmp(b_name).then_with(|| order(a, b))),
        )
        .then(a.len().cmp(&b.len())),
        _ => rank(a).cmp(&rank(b)),
    }
}

/// The first of `orderings` that is not `Equal`.
fn in_turn(mut orderings: impl Iterator<Item = Ordering>) -> Ordering {
    orderings
        .find(|ordering| ordering.is_ne())
        .unwrap_or(Ordering::Equal)
}

fn rank(value: &Value) -> u8 {
    match value {
        Value::Null => 0,
        Value::Bool(_) => 1,
        Value::Number(_) => 2,
        Value::String(_) => 3,
        Value::Array(_) => 4,
        Value::Object(_) => 5,
    }
}

/// Numbers by their exact values, whether serde_json holds them as integers (those that fit in
/// 64 bits) or as `f64`.
fn compare(a: &Number, b: &Number) -> Ordering {
    match (exact_integer(a), exact_integer(b)) {
        (Some(a), Some(b)) => a.cmp(&b),
        (Some(a), None) => compare_integer_float(a, float(b)),
        (None, Some(b)) => compare_integer_float(b, float(a)).reverse(),
        // JSON has no NaN, so any two of its floats are ordered.
        (None, None) => float(a).partial_cmp(&float(b)).unwrap_or(Ordering::Equal),
    }
}

fn exact_integer(number: &Number) -> Option<i128> {
    number
        .as_i64()
        .map(i128::from)
        .or_else(|| number.as_u64().map(i128::from))
}

/// Every number has an `f64` form: serde_json is built without `arbitrary_precision`.
fn float(number: &Number) -> f64 {
    number.as_f64().unwrap_or_default()
}

/// Compares without rounding the integer to `f64`, which would make `2^53 + 1` equal `2^53`.
fn compare_integer_float(integer: i128, float: f64) -> Ordering {
    // Past ±2^127 no integer here comes near; within, `floor` converts to i128 exactly.
    const LIMIT: f64 = i128::MAX as f64;
    if float >= LIMIT {
        return Ordering::Less;
    }
    if float < -LIMIT {
        return Ordering::Greater;
    }
    let floor = float.floor();
    // Equal floors leave the integer below the float by whatever fraction the float has.
    let fraction = if float > floor {
        Ordering::Less
    } else {
        Ordering::Equal
    };
    integer.cmp(&(floor as i128)).then(fraction)
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A value's type, and the value too when it is short by nature: `number 1.5`, `array`.
fn describe(value: &Value) -> String {
    match value {
        Value::Null | Value::Array(_) | Value::Object(_) => type_name(value).into(),
        _ => format!("{} {}", type_name(value), show(value)),
    }
}

/// `value` as JSON, cut short past [`SHOWN_CHARS`].
fn show(value: &Value) -> String {
    let json = value.to_string();
    match json.char_indices().nth(SHOWN_CHARS) {
        Some((cut, _)) => format!("{}…", &json[..cut]),
        None => json,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// The reason `value` fails `schema`, or "ok".
    fn verdict(schema: Value, value: Value) -> String {
        let schema = Schema::new(&schema).expect("a well-formed schema");
        match schema.check(&value) {
            Ok(()) => "ok".into(),
            Err(violation) => violation.to_string(),
        }
    }

    /// The reason `schema` is malformed, or "ok".
    fn admission(schema: Value) -> String {
        match Schema::new(&schema) {
            Ok(_) => "ok".into(),
            Err(violation) => violation.to_string(),
        }
    }

    #[test]
    fn trivial_schemas() {
        assert_eq!(verdict(json!(true), json!({"a": 1})), "ok");
        assert_eq!(verdict(json!({}), json!([1, "x"])), "ok");
        assert_eq!(
            verdict(json!(false), json!(null)),
            "/: no value is allowed here"
        );
    }

    #[test]
    fn type_names() {
        let cases = [
            ("null", json!(null), json!(0)),
            ("boolean", json!(false), json!("false")),
            ("object", json!({}), json!([])),
            ("array", json!([]), json!({})),
            ("number", json!(1.5), json!("1.5")),
            ("integer", json!(-3), json!(1.5)),
            ("string", json!(""), json!(null)),
        ];
        for (name, fits, misfits) in cases {
            assert_eq!(verdict(json!({"type": name}), fits), "ok", "{name}");
            assert_ne!(verdict(json!({"type": name}), misfits), "ok", "{name}");
        }
        assert_eq!(
            verdict(json!({"type": "integer"}), json!("80")),
            "/: expected integer, found string \"80\""
        );
    }

    #[test]
    fn integer_is_a_number_without_a_fraction() {
        let integer = json!({"type": "integer"});
        assert_eq!(verdict(integer.clone(), json!(1.0)), "ok");
        assert_eq!(
            verdict(integer.clone(), json!(18446744073709551615u64)),
            "ok"
        );
        assert_eq!(verdict(integer.clone(), json!(-1e300)), "ok");
        assert_eq!(
            verdict(integer, json!(2.5)),
            "/: expected integer, found number 2.5"
        );
        assert_eq!(verdict(json!({"type": "number"}), json!(7)), "ok");
    }

    #[test]
    fn type_lists() {
        let schema = json!({"type": ["string", "integer", "null"]});
        assert_eq!(verdict(schema.clone(), json!(null)), "ok");
        assert_eq!(verdict(schema.clone(), json!(3)), "ok");
        assert_eq!(
            verdict(schema, json!(true)),
            "/: expected string, integer or null, found boolean true"
        );
        assert_eq!(
            verdict(json!({"type": ["string", "null"]}), json!([])),
            "/: expected string or null, found array"
        );
    }

    #[test]
    fn enum_and_const() {
        let colours = json!({"enum": ["red", "green", 1]});
        assert_eq!(verdict(colours.clone(), json!("green")), "ok");
        assert_eq!(verdict(colours.clone(), json!(1.0)), "ok");
        assert_eq!(
            verdict(colours, json!("blue")),
            "/: \"blue\" is not one of [\"red\",\"green\",1]"
        );
        assert_eq!(
            verdict(json!({"const": {"a": [1, 2]}}), json!({"a": [1.0, 2]})),
            "ok"
        );
        assert_eq!(
            verdict(json!({"const": {"a": [1, 2]}}), json!({"a": [2, 1]})),
            "/: expected {\"a\":[1,2]}, found {\"a\":[2,1]}"
        );
        assert_eq!(verdict(json!({"const": null}), json!(null)), "ok");
        assert_eq!(
            verdict(json!({"const": null}), json!(false)),
            "/: expected null, found false"
        );
    }

    #[test]
    fn numeric_bounds() {
        let port = json!({"minimum": 1, "maximum": 65535});
        assert_eq!(verdict(port.clone(), json!(1)), "ok");
        assert_eq!(verdict(port.clone(), json!(65535.0)), "ok");
        assert_eq!(
            verdict(port.clone(), json!(0)),
            "/: 0 is below the minimum 1"
        );
        assert_eq!(
            verdict(port.clone(), json!(70000)),
            "/: 70000 is above the maximum 65535"
        );
        assert_eq!(
            verdict(port, json!("70000")),
            "ok",
            "bounds apply to numbers only"
        );
        let open = json!({"exclusiveMinimum": 0, "exclusiveMaximum": 1.5});
        assert_eq!(verdict(open.clone(), json!(0.5)), "ok");
        assert_eq!(
            verdict(open.clone(), json!(0)),
            "/: 0 is not above the exclusive minimum 0"
        );
        assert_eq!(
            verdict(open, json!(1.5)),
            "/: 1.5 is not below the exclusive maximum 1.5"
        );
        assert_eq!(
            verdict(json!({"maximum": -1}), json!(18446744073709551615u64)),
            "/: 18446744073709551615 is above the maximum -1"
        );
    }

    #[test]
    fn string_length_counts_scalar_values() {
        let schema = json!({"minLength": 2, "maxLength": 3});
        assert_eq!(verdict(schema.clone(), json!("日本語")), "ok");
        assert_eq!(
            verdict(schema.clone(), json!("é")),
            "/: has 1 character, fewer than the minimum 2"
        );
        assert_eq!(
            verdict(schema.clone(), json!("abcd")),
            "/: has 4 characters, more than the maximum 3"
        );
        assert_eq!(
            verdict(schema, json!(12345)),
            "ok",
            "lengths apply to strings only"
        );
    }

    #[test]
    fn array_size_and_uniqueness() {
        let schema = json!({"minItems": 1, "maxItems": 3.0, "uniqueItems": true});
        assert_eq!(verdict(schema.clone(), json!([1, "1", [1]])), "ok");
        assert_eq!(
            verdict(schema.clone(), json!([])),
            "/: has 0 items, fewer than the minimum 1"
        );
        assert_eq!(
            verdict(schema.clone(), json!([1, 2, 3, 4])),
            "/: has 4 items, more than the maximum 3"
        );
        assert_eq!(
            verdict(schema.clone(), json!([2, 1, 1.0])),
            "/: items 1 and 2 are equal"
        );
        assert_eq!(
            verdict(schema, json!([{"a": 1, "b": [0]}, {"b": [0.0], "a": 1}])),
            "/: items 0 and 1 are equal"
        );
        assert_eq!(verdict(json!({"uniqueItems": false}), json!([1, 1])), "ok");
    }

    #[test]
    fn object_size_and_required() {
        let schema = json!({"minProperties": 1, "maxProperties": 2, "required": ["host", "port"]});
        assert_eq!(
            verdict(schema.clone(), json!({"host": "a", "port": 1})),
            "ok"
        );
        assert_eq!(
            verdict(schema.clone(), json!({})),
            "/: has 0 properties, fewer than the minimum 1"
        );
        assert_eq!(
            verdict(schema.clone(), json!({"host": "a", "port": 1, "x": 0})),
            "/: has 3 properties, more than the maximum 2"
        );
        assert_eq!(
            verdict(schema, json!({"port": 1})),
            "/: missing required property \"host\""
        );
        assert_eq!(verdict(json!({"required": ["a"]}), json!([])), "ok");
    }

    #[test]
    fn properties_and_additional_properties() {
        let closed = json!({
            "properties": {"port": {"type": "integer"}},
            "additionalProperties": false,
        });
        assert_eq!(verdict(closed.clone(), json!({"port": 1})), "ok");
        assert_eq!(verdict(closed.clone(), json!({})), "ok");
        assert_eq!(
            verdict(closed.clone(), json!({"port": "1"})),
            "/port: expected integer, found string \"1\""
        );
        assert_eq!(
            verdict(closed, json!({"port": 1, "post": 2})),
            "/post: property not allowed (additionalProperties is false)"
        );
        let labels = json!({
            "properties": {"name": {"type": "string"}},
            "additionalProperties": {"type": "number"},
        });
        assert_eq!(verdict(labels.clone(), json!({"name": "a", "x": 1})), "ok");
        assert_eq!(
            verdict(labels, json!({"name": "a", "x": "1"})),
            "/x: expected number, found string \"1\""
        );
    }

    #[test]
    fn items_apply_to_every_element() {
        let schema = json!({"items": {"type": "string", "maxLength": 1}});
        assert_eq!(verdict(schema.clone(), json!(["a", "b"])), "ok");
        assert_eq!(
            verdict(schema, json!(["a", "bc", 3])),
            "/1: has 2 characters, more than the maximum 1"
        );
    }

    #[test]
    fn nested_pointers() {
        let schema = json!({
            "type": "object",
            "properties": {
                "servers": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["port"],
                        "properties": {"port": {"maximum": 65535}},
                    },
                },
            },
        });
        let value = json!({"servers": [{"port": 80}, {"port": 70000}]});
        assert_eq!(
            verdict(schema.clone(), value),
            "/servers/1/port: 70000 is above the maximum 65535"
        );
        assert_eq!(
            verdict(schema, json!({"servers": [{"port": 80}, {}]})),
            "/servers/1: missing required property \"port\""
        );
        assert_eq!(
            verdict(
                json!({"properties": {"a/b~c": {"type": "null"}}}),
                json!({"a/b~c": 1})
            ),
            "/a~1b~0c: expected null, found number 1"
        );
    }

    #[test]
    fn first_violation_in_document_order() {
        let schema = json!({"properties": {"a": {"type": "string"}, "b": {"type": "string"}}});
        assert_eq!(
            verdict(schema, json!({"b": 1, "a": 2})),
            "/a: expected string, found number 2",
            "members in sorted-key order"
        );
        let split = json!({"allOf": [
            {"properties": {"b": {"maximum": 1}}},
            {"properties": {"a": {"maximum": 1}}},
        ]});
        assert_eq!(
            verdict(split, json!({"a": 5, "b": 5})),
            "/a: 5 is above the maximum 1",
            "the earliest of allOf's branches"
        );
        let mixed = json!({
            "properties": {"z": {"maximum": 1}},
            "allOf": [{"properties": {"a": {"maximum": 1}}}],
        });
        assert_eq!(
            verdict(mixed, json!({"a": 5, "z": 5})),
            "/a: 5 is above the maximum 1",
            "allOf against the schema's own members"
        );
        let whole = json!({
            "properties": {"a": {"maximum": 1}},
            "allOf": [{"required": ["b"]}],
        });
        assert_eq!(
            verdict(whole, json!({"a": 5})),
            "/: missing required property \"b\"",
            "the value before its members"
        );
        let elements = json!({"items": {"type": "integer"}, "maxItems": 2});
        assert_eq!(
            verdict(elements, json!([1, "x", 3])),
            "/: has 3 items, more than the maximum 2",
            "the array before its elements"
        );
    }

    #[test]
    fn combinators() {
        let any = json!({"anyOf": [{"type": "string"}, {"type": "integer"}]});
        assert_eq!(verdict(any.clone(), json!(1)), "ok");
        assert_eq!(
            verdict(any, json!(1.5)),
            "/: matches none of the anyOf schemas"
        );
        let one = json!({"oneOf": [{"type": "number"}, {"type": "integer"}, {"type": "string"}]});
        assert_eq!(verdict(one.clone(), json!(1.5)), "ok");
        assert_eq!(verdict(one.clone(), json!("x")), "ok");
        assert_eq!(
            verdict(one.clone(), json!(2)),
            "/: matches oneOf schemas 0 and 1, not exactly one"
        );
        assert_eq!(
            verdict(one, json!(null)),
            "/: matches none of the oneOf schemas"
        );
        let not = json!({"not": {"type": "null"}});
        assert_eq!(verdict(not.clone(), json!(0)), "ok");
        assert_eq!(
            verdict(not, json!(null)),
            "/: matches the schema under \"not\""
        );
        let all = json!({"allOf": [{"minimum": 0}, {"maximum": 10}]});
        assert_eq!(verdict(all.clone(), json!(5)), "ok");
        assert_eq!(verdict(all, json!(11)), "/: 11 is above the maximum 10");
        assert_eq!(
            verdict(
                json!({"properties": {"x": {"anyOf": [{"const": 1}, {"const": 2}]}}}),
                json!({"x": 3})
            ),
            "/x: matches none of the anyOf schemas"
        );
    }

    #[test]
    fn numbers_compare_by_value() {
        let n = |text: &str| serde_json::from_str::<Number>(text).unwrap();
        assert_eq!(compare(&n("1"), &n("1.0")), Ordering::Equal);
        assert_eq!(
            compare(&n("-1"), &n("18446744073709551615")),
            Ordering::Less
        );
        assert_eq!(compare(&n("0.5"), &n("1")), Ordering::Less);
        assert_eq!(compare(&n("-0.0"), &n("0")), Ordering::Equal);
        assert_eq!(compare(&n("2.5"), &n("2")), Ordering::Greater);
        assert_eq!(compare(&n("-2.5"), &n("-2")), Ordering::Less);
        assert_eq!(compare(&n("-2.5"), &n("-3")), Ordering::Greater);
        // 2^53 + 1 has no f64 of its own; rounding it would make it equal 2^53.
        assert_eq!(
            compare(&n("9007199254740993"), &n("9007199254740992.0")),
            Ordering::Greater
        );
        assert_eq!(
            compare(&n("18446744073709551615"), &n("1e300")),
            Ordering::Less
        );
        assert_eq!(
            compare(&n("-9223372036854775808"), &n("-1e300")),
            Ordering::Greater
        );
        assert!(equal(&json!([1, {"a": 2.0}]), &json!([1.0, {"a": 2}])));
        assert!(!equal(&json!({"a": 1}), &json!({"a": 1, "b": 1})));
        assert!(!equal(&json!(1), &json!("1")));
    }

    #[test]
    fn first_duplicate_is_the_earliest_repeat() {
        let elements = |value: Value| value.as_array().unwrap().clone();
        assert_eq!(first_duplicate(&elements(json!([]))), None);
        assert_eq!(
            first_duplicate(&elements(json!([1, "1", [1], {"1": 1}, null, true]))),
            None
        );
        assert_eq!(
            first_duplicate(&elements(json!(["b", "a", "b", "a", "a"]))),
            Some((0, 2))
        );
        assert_eq!(
            first_duplicate(&elements(json!([3, 2, 1, 2.0, 3.0]))),
            Some((1, 3))
        );
        assert_eq!(
            first_duplicate(&elements(
                json!([{"a": [1]}, {"a": [1], "b": 0}, {"a": [1.0]}])
            )),
            Some((0, 2))
        );
    }

    #[test]
    fn supported_keywords_and_annotations_are_admitted() {
        let schema = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": "config",
            "$comment": "c",
            "title": "t",
            "description": "d",
            "default": {},
            "examples": [{}],
            "format": "hostname",
            "type": ["object", "null"],
            "enum": [null, {}],
            "const": null,
            "properties": {"a": true, "b": {"type": "string", "minLength": 0, "maxLength": 2}},
            "required": ["a"],
            "additionalProperties": {"type": "number", "minimum": 0, "maximum": 1.5},
            "minProperties": 0,
            "maxProperties": 5,
            "items": {"exclusiveMinimum": 0, "exclusiveMaximum": 1},
            "minItems": 0,
            "maxItems": 1,
            "uniqueItems": true,
            "allOf": [true],
            "anyOf": [false, {}],
            "oneOf": [{"not": false}],
            "not": {"type": "array"},
        });
        assert_eq!(admission(schema), "ok");
        assert_eq!(admission(json!(true)), "ok");
        assert_eq!(admission(json!(false)), "ok");
    }

    #[test]
    fn format_is_not_enforced() {
        assert_eq!(
            verdict(json!({"format": "email"}), json!("not an email")),
            "ok"
        );
    }

    #[test]
    fn unknown_keywords_are_rejected_where_they_are() {
        assert_eq!(
            admission(json!({"properties": {"port": {"minimun": 1}}})),
            "/properties/port: unsupported keyword \"minimun\""
        );
        for keyword in [
            "pattern",
            "patternProperties",
            "$ref",
            "$defs",
            "if",
            "then",
            "else",
            "dependentRequired",
        ] {
            assert_eq!(
                admission(json!({ keyword: {} })),
                format!("/: unsupported keyword {keyword:?}")
            );
        }
        assert_eq!(
            admission(json!({"allOf": [{}, {"items": {"maxitems": 1}}]})),
            "/allOf/1/items: unsupported keyword \"maxitems\""
        );
    }

    #[test]
    fn malformed_arguments_are_rejected() {
        let cases = [
            (
                json!([]),
                "/: expected a schema (an object or a boolean), found array",
            ),
            (
                json!("string"),
                "/: expected a schema (an object or a boolean), found string \"string\"",
            ),
            (
                json!({"type": "strin"}),
                "/: \"type\" must be a type name or a non-empty array of them, found \"strin\"",
            ),
            (
                json!({"type": []}),
                "/: \"type\" must be a type name or a non-empty array of them, found []",
            ),
            (
                json!({"enum": "a"}),
                "/: \"enum\" must be an array, found \"a\"",
            ),
            (
                json!({"required": [1]}),
                "/: \"required\" must be an array of strings, found [1]",
            ),
            (
                json!({"uniqueItems": 1}),
                "/: \"uniqueItems\" must be a boolean, found 1",
            ),
            (
                json!({"maximum": "5"}),
                "/: \"maximum\" must be a number, found \"5\"",
            ),
            (
                json!({"minLength": -1}),
                "/: \"minLength\" must be a non-negative integer, found -1",
            ),
            (
                json!({"maxItems": 1.5}),
                "/: \"maxItems\" must be a non-negative integer, found 1.5",
            ),
            (
                json!({"properties": []}),
                "/: \"properties\" must be an object of schemas, found []",
            ),
            (
                json!({"properties": {"a": 1}}),
                "/properties/a: expected a schema (an object or a boolean), found number 1",
            ),
            (
                json!({"items": [{}]}),
                "/items: expected a schema (an object or a boolean), found array",
            ),
            (
                json!({"additionalProperties": null}),
                "/additionalProperties: expected a schema (an object or a boolean), found null",
            ),
            (
                json!({"anyOf": []}),
                "/: \"anyOf\" must be a non-empty array of schemas, found []",
            ),
            (
                json!({"oneOf": {}}),
                "/: \"oneOf\" must be a non-empty array of schemas, found {}",
            ),
            (
                json!({"not": 0}),
                "/not: expected a schema (an object or a boolean), found number 0",
            ),
        ];
        for (schema, reason) in cases {
            assert_eq!(admission(schema), reason);
        }
    }

    #[test]
    fn first_malformed_keyword_in_sorted_order() {
        assert_eq!(
            admission(json!({"zzz": 1, "properties": {"a": {"bad": 1}}})),
            "/properties/a: unsupported keyword \"bad\""
        );
    }

    #[test]
    fn long_values_are_cut_short() {
        let long = "x".repeat(100);
        let reason = verdict(json!({"enum": ["a"]}), json!(long));
        assert_eq!(
            reason,
            format!("/: \"{}… is not one of [\"a\"]", "x".repeat(63))
        );
    }
}

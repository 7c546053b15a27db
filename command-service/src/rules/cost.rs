//! The most an expression can take to evaluate, worked out from its syntax tree before
//! it ever runs: the bytes of the largest value it can build and the steps it can take
//! on the largest asset the service stores.
//!
//! A rule's expressions run once per asset a run reads, inside the command service.
//! CEL has no loops, but its macros iterate (`lists.range(1000000).map(i, ...)`) and
//! some functions grow their input (`replace`, `join`, `format`): a few dozen bytes of
//! expression can ask for more memory than the machine has, which aborts the process,
//! or for hours of work per asset. The trial run on a sample asset cannot catch it: it
//! would run the blow-up itself, and a sample's empty name does not show what
//! `asset.name.replace('', asset.name)` makes of a 256-byte name. So every node gets an
//! upper bound, from the limits on what an asset holds ([`crate::assets::input`]) and
//! what each function can make of its operands; an expression whose bound passes
//! [`MAX_VALUE_BYTES`] or [`MAX_STEPS`] is refused, pointed at the first node (innermost
//! first) that passes it.

use super::expression::qualified_function;
use crate::assets::input::{MAX_PROPERTIES, MAX_PROPERTY_NAME, MAX_STRING_PROPERTY, MAX_TEXT};
use cel::common::ast::{ComprehensionExpr, EntryExpr, Expr, LiteralValue, MapExpr, StructExpr};
use cel::IdedExpr;
use std::collections::HashMap;
use std::rc::Rc;

/// The most bytes one value of an evaluation may hold (a string's bytes, a list's
/// elements with [`ELEMENT`] each).
pub const MAX_VALUE_BYTES: u64 = 16 << 20;
/// The most steps one evaluation may take: roughly bytes touched, about a second of
/// work at worst.
pub const MAX_STEPS: u64 = 1 << 30;

/// What a list or map element costs besides its content.
const ELEMENT: u64 = 16;
/// A number, boolean, null, timestamp or duration; also the most text one becomes
/// (`string(-1.2345678901234567e-308)` is 24 bytes).
const SCALAR: u64 = 32;
/// The most text one clause of `format` makes of a number (`%.100f` of `1e308`).
const FORMATTED_NUMBER: u64 = 420;
/// The `lists` extension's largest `lists.range`.
const MAX_RANGE: u64 = 1_000_000;
/// Compiling a pattern that is not in the rule's source (`matches` of a pattern built
/// from the asset): the service bounds what one compiles to (256 KiB), which takes up
/// to about 15 ms (debug build). 64 such calls per asset at most.
const PATTERN_STEPS: u64 = 1 << 24;

/// Why an expression was refused: the message and the node it points at.
#[derive(Debug, Clone, PartialEq)]
pub struct TooCostly {
    pub message: String,
    pub node: u64,
}

/// Check `expression` (the root of a compiled program) against [`MAX_VALUE_BYTES`]
/// and [`MAX_STEPS`].
pub fn check(expression: &IdedExpr) -> Result<(), TooCostly> {
    let bound = Bounds::default().of(expression)?;
    if bound.steps > MAX_STEPS {
        return Err(too_many_steps(expression.id, bound.steps));
    }
    Ok(())
}

/// An upper bound on a value and on the work of making it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Bound {
    /// Bytes of the value.
    bytes: u64,
    /// Elements, when it is iterated or indexed (a list, a map's keys).
    items: u64,
    /// Bytes of its largest element (a map's value).
    item_bytes: u64,
    /// Bytes of what iterating it gives at most: an element of a list, a map's key.
    key_bytes: u64,
    /// Known to be a number, boolean, null, timestamp or duration: `+` of it adds.
    scalar: bool,
    /// Known to be a list or map: `+` of it copies its elements, not their contents.
    collection: bool,
    /// Steps to evaluate it.
    steps: u64,
}

impl Bound {
    const SCALAR: Self = Self {
        bytes: SCALAR,
        items: 1,
        item_bytes: SCALAR,
        key_bytes: SCALAR,
        scalar: true,
        collection: false,
        steps: 1,
    };

    /// A string of up to `bytes` bytes (or a value whose type is not known, as large).
    fn text(bytes: u64) -> Self {
        Self {
            bytes,
            items: 1,
            item_bytes: bytes,
            key_bytes: bytes,
            scalar: false,
            collection: false,
            steps: 1,
        }
    }

    /// A list of up to `items` elements of up to `item_bytes` each.
    fn collection(items: u64, item_bytes: u64) -> Self {
        Self::map(items, 0, item_bytes).with_keys(item_bytes)
    }

    /// A map of up to `items` entries, keys of up to `key_bytes` and values of up to
    /// `value_bytes`.
    fn map(items: u64, key_bytes: u64, value_bytes: u64) -> Self {
        let entry = key_bytes
            .saturating_add(value_bytes)
            .saturating_add(ELEMENT);
        Self {
            bytes: items.saturating_mul(entry),
            items,
            item_bytes: value_bytes,
            key_bytes,
            scalar: false,
            collection: true,
            steps: 1,
        }
    }

    fn with_keys(mut self, key_bytes: u64) -> Self {
        self.key_bytes = key_bytes;
        self
    }

    /// An element of this value of up to `bytes`.
    fn part(bytes: u64) -> Self {
        Self {
            items: (bytes / ELEMENT).max(1),
            ..Self::text(bytes)
        }
    }

    /// One element of this value, as indexing gives it (a map's value).
    fn element(&self) -> Self {
        Self::part(self.item_bytes)
    }

    /// One element of this value, as iterating gives it (a map's key).
    fn key(&self) -> Self {
        Self::part(self.key_bytes)
    }

    /// The larger of two (the branches of `_?_:_`).
    fn or(self, other: Self) -> Self {
        Self {
            bytes: self.bytes.max(other.bytes),
            items: self.items.max(other.items),
            item_bytes: self.item_bytes.max(other.item_bytes),
            key_bytes: self.key_bytes.max(other.key_bytes),
            scalar: self.scalar && other.scalar,
            collection: self.collection && other.collection,
            steps: self.steps.max(other.steps),
        }
    }

    /// With `steps` taken besides.
    fn plus_steps(mut self, steps: u64) -> Self {
        self.steps = self.steps.saturating_add(steps);
        self
    }
}

/// The bounds of the variables in scope: `asset`, and the comprehension variables of
/// the enclosing macros (innermost last); and what is already worked out.
///
/// A comprehension's step is bounded several times (from the first accumulator, the
/// second, the last; for an empty element too), so without remembering, nested macros
/// cost 3^depth and more: 14 nested `map`s took 19 s to check. A node's bound depends only on the bounds of its free
/// variables, so it is remembered under those.
#[derive(Default)]
struct Bounds {
    variables: Vec<(String, Bound)>,
    /// The free variables of each node, by node id.
    free: HashMap<u64, Rc<[String]>>,
    /// Bounds worked out, by node id and the bounds of its free variables.
    known: HashMap<(u64, Vec<Bound>), Bound>,
}

/// An asset's `properties`: a map of up to [`MAX_PROPERTIES`] names and values.
fn properties() -> Bound {
    Bound::map(
        MAX_PROPERTIES as u64,
        MAX_PROPERTY_NAME as u64,
        MAX_STRING_PROPERTY as u64,
    )
}

/// An asset's field named `field`.
fn asset_field(field: &str) -> Bound {
    match field {
        "properties" => properties(),
        "version" => Bound::SCALAR,
        _ => Bound::text(MAX_TEXT as u64),
    }
}

impl Bounds {
    fn variable(&self, name: &str) -> Bound {
        match self.variables.iter().rev().find(|(bound, _)| bound == name) {
            Some((_, bound)) => *bound,
            None if name == "asset" => {
                let fields = super::expression::ASSET_FIELDS;
                let longest = fields.iter().map(|field| field.len()).max().unwrap_or(0);
                Bound::map(fields.len() as u64, longest as u64, properties().bytes)
            }
            // A type's name (`double`).
            None => Bound::SCALAR,
        }
    }

    /// The bound of `node`, each part checked against [`MAX_VALUE_BYTES`] and
    /// [`MAX_STEPS`] as it is worked out.
    fn of(&mut self, node: &IdedExpr) -> Result<Bound, TooCostly> {
        let free = self.free_variables(node);
        let key = (
            node.id,
            free.iter()
                .map(|name| self.variable(name))
                .collect::<Vec<_>>(),
        );
        if let Some(known) = self.known.get(&key) {
            return Ok(*known);
        }
        let bound = self.work_out(node)?;
        self.known.insert(key, bound);
        Ok(bound)
    }

    /// The names `node` uses that it does not bind itself.
    fn free_variables(&mut self, node: &IdedExpr) -> Rc<[String]> {
        if let Some(free) = self.free.get(&node.id) {
            return free.clone();
        }
        let mut names: Vec<String> = Vec::new();
        let add = |names: &mut Vec<String>, more: &[String], bound: &[&String]| {
            for name in more {
                if !bound.contains(&name) && !names.contains(name) {
                    names.push(name.clone());
                }
            }
        };
        match &node.expr {
            Expr::Unspecified | Expr::Literal(_) => {}
            Expr::Ident(name) => names.push(name.clone()),
            Expr::Select(select) => names = self.free_variables(&select.operand).to_vec(),
            Expr::Call(call) => {
                for part in call.target.as_deref().into_iter().chain(&call.args) {
                    let more = self.free_variables(part);
                    add(&mut names, &more, &[]);
                }
            }
            Expr::List(list) => {
                for element in &list.elements {
                    let more = self.free_variables(element);
                    add(&mut names, &more, &[]);
                }
            }
            Expr::Map(MapExpr { entries }) | Expr::Struct(StructExpr { entries, .. }) => {
                for entry in entries {
                    let parts: Vec<&IdedExpr> = match &entry.expr {
                        EntryExpr::MapEntry(entry) => vec![&entry.key, &entry.value],
                        EntryExpr::StructField(field) => vec![&field.value],
                    };
                    for part in parts {
                        let more = self.free_variables(part);
                        add(&mut names, &more, &[]);
                    }
                }
            }
            Expr::Comprehension(comprehension) => {
                let outside = [&comprehension.iter_range, &comprehension.accu_init];
                for part in outside {
                    let more = self.free_variables(part);
                    add(&mut names, &more, &[]);
                }
                let mut looping = vec![&comprehension.iter_var, &comprehension.accu_var];
                looping.extend(&comprehension.iter_var2);
                for part in [&comprehension.loop_cond, &comprehension.loop_step] {
                    let more = self.free_variables(part);
                    add(&mut names, &more, &looping);
                }
                let more = self.free_variables(&comprehension.result);
                add(&mut names, &more, &[&comprehension.accu_var]);
            }
        }
        let names: Rc<[String]> = names.into();
        self.free.insert(node.id, names.clone());
        names
    }

    /// [`Bounds::of`] without remembering.
    fn work_out(&mut self, node: &IdedExpr) -> Result<Bound, TooCostly> {
        let bound = match &node.expr {
            Expr::Unspecified => Bound::SCALAR,
            Expr::Literal(LiteralValue::String(text)) => Bound::text(text.inner().len() as u64),
            Expr::Literal(LiteralValue::Bytes(bytes)) => Bound::text(bytes.inner().len() as u64),
            Expr::Literal(_) => Bound::SCALAR,
            Expr::Ident(name) => self.variable(name),
            Expr::Select(select) => {
                let operand = self.of(&select.operand)?;
                let selected = match &select.operand.expr {
                    _ if select.test => Bound::SCALAR,
                    Expr::Ident(name) if name == "asset" && !self.is_bound("asset") => {
                        asset_field(&select.field)
                    }
                    Expr::Select(inner)
                        if inner.field == "properties"
                            && matches!(&inner.operand.expr, Expr::Ident(name) if name == "asset")
                            && !self.is_bound("asset") =>
                    {
                        Bound::text(MAX_STRING_PROPERTY as u64)
                    }
                    _ => operand.element(),
                };
                selected.plus_steps(operand.steps)
            }
            Expr::List(list) => {
                let elements = self.all(list.elements.iter())?;
                let item_bytes = elements.iter().map(|e| e.bytes).max().unwrap_or(0);
                Bound::collection(elements.len() as u64, item_bytes)
                    .plus_steps(total_steps(&elements))
            }
            Expr::Map(map) => self.entries(&map.entries)?,
            Expr::Struct(structure) => self.entries(&structure.entries)?,
            Expr::Call(call) => {
                // `lists.range(n)`: the target names the function, it is no operand.
                let qualified = qualified_function(call).and_then(Result::ok);
                let target = call.target.as_deref().filter(|_| qualified.is_none());
                let operands = self.all(target.into_iter().chain(&call.args))?;
                let function = qualified.as_deref().unwrap_or(&call.func_name);
                let bound = called(function, &call.args, &operands);
                bound.plus_steps(total_steps(&operands))
            }
            Expr::Comprehension(comprehension) => self.comprehension(comprehension)?,
        };
        self.check_bytes(node, bound)?;
        if bound.steps > MAX_STEPS {
            return Err(too_many_steps(node.id, bound.steps));
        }
        Ok(bound)
    }

    /// The bound of a macro's comprehension. The accumulator after every step: a
    /// macro's step keeps it (`all`, `exists`) or adds to it what one element gives
    /// (`map`, `filter`); two steps tell which. Over elements that share their bytes
    /// (the pieces of a `split`: 4,097 of up to 4,096 bytes, 4 KiB in all), what the
    /// elements give is bounded by [`over_elements`].
    fn comprehension(&mut self, comprehension: &ComprehensionExpr) -> Result<Bound, TooCostly> {
        let range = self.of(&comprehension.iter_range)?;
        let init = self.of(&comprehension.accu_init)?;
        let n = range.items;
        // One variable: a list's element or a map's key; two: the index or key, and
        // the element or value.
        let scope_of = |key: Bound| {
            let mut scope = vec![(comprehension.iter_var.clone(), key)];
            if let Some(second) = &comprehension.iter_var2 {
                scope.push((second.clone(), range.element()));
            }
            scope
        };
        let widest = scope_of(range.key());
        // The bytes the elements share, when that bounds them better than each at its
        // largest; then each bound is also worked out for an empty element.
        let shared = (comprehension.iter_var2.is_none()
            && range.key_bytes > 0
            && range.bytes < n.saturating_mul(range.key_bytes) / 2)
            .then(|| (scope_of(Bound::part(0)), range.bytes, range.key_bytes));
        let over = |at_empty: Option<u64>, at_widest: u64| match (&shared, at_empty) {
            (Some((_, total, widest)), Some(at_empty)) => {
                over_elements(n, *total, *widest, at_empty, at_widest)
            }
            _ => n.saturating_mul(at_widest),
        };
        let first = self.step(&widest, comprehension, init)?;
        let second = self.step(&widest, comprehension, first)?;
        let last = if n == 0 {
            init
        } else if second.bytes <= first.bytes && second.items <= first.items {
            init.or(first)
        } else {
            let grows = |first: Bound, second: Bound| second.bytes.saturating_sub(first.bytes);
            let at_empty = match &shared {
                Some((empty, ..)) => {
                    let first = self.step(empty, comprehension, init)?;
                    Some(grows(first, self.step(empty, comprehension, first)?))
                }
                None => None,
            };
            Bound {
                bytes: init
                    .bytes
                    .saturating_add(over(at_empty, grows(first, second))),
                items: init
                    .items
                    .saturating_add(n.saturating_mul(second.items.saturating_sub(first.items))),
                ..first.or(second)
            }
        };
        self.check_bytes(&comprehension.loop_step, last)?;
        // Each step at its largest accumulator.
        let mut step_steps = |scope: &[(String, Bound)]| -> Result<u64, TooCostly> {
            let each = self.step(scope, comprehension, last)?;
            let condition = self.scoped(
                scope,
                &comprehension.accu_var,
                last,
                &comprehension.loop_cond,
            )?;
            Ok(each.steps.saturating_add(condition.steps))
        };
        let at_widest = step_steps(&widest)?;
        let at_empty = match &shared {
            Some((empty, ..)) => Some(step_steps(empty)?),
            None => None,
        };
        let loops = over(at_empty, at_widest);
        let result = self.scoped(&[], &comprehension.accu_var, last, &comprehension.result)?;
        Ok(Bound { steps: 1, ..result }
            .plus_steps(range.steps)
            .plus_steps(init.steps)
            .plus_steps(loops)
            .plus_steps(result.steps))
    }

    fn is_bound(&self, name: &str) -> bool {
        self.variables.iter().any(|(bound, _)| bound == name)
    }

    fn check_bytes(&self, node: &IdedExpr, bound: Bound) -> Result<(), TooCostly> {
        if bound.bytes > MAX_VALUE_BYTES {
            return Err(TooCostly {
                message: format!(
                    "could build a value of up to {} here, more than the {} one evaluation \
                     may hold (with assets as large as the service stores: text fields of \
                     {MAX_TEXT} bytes, {MAX_PROPERTIES} properties of {MAX_STRING_PROPERTY} \
                     bytes); iterate over fewer elements or grow text less",
                    human(bound.bytes),
                    human(MAX_VALUE_BYTES)
                ),
                node: node.id,
            });
        }
        Ok(())
    }

    /// One step of `comprehension` with the accumulator at `accumulator`.
    fn step(
        &mut self,
        scope: &[(String, Bound)],
        comprehension: &cel::common::ast::ComprehensionExpr,
        accumulator: Bound,
    ) -> Result<Bound, TooCostly> {
        self.scoped(
            scope,
            &comprehension.accu_var,
            accumulator,
            &comprehension.loop_step,
        )
    }

    /// The bound of `node` with `scope` and the accumulator in scope.
    fn scoped(
        &mut self,
        scope: &[(String, Bound)],
        accumulator: &str,
        bound: Bound,
        node: &IdedExpr,
    ) -> Result<Bound, TooCostly> {
        let depth = self.variables.len();
        self.variables.extend(scope.iter().cloned());
        self.variables
            .push((accumulator.to_owned(), Bound { steps: 1, ..bound }));
        let outcome = self.of(node);
        self.variables.truncate(depth);
        outcome
    }

    fn all<'e>(
        &mut self,
        nodes: impl Iterator<Item = &'e IdedExpr>,
    ) -> Result<Vec<Bound>, TooCostly> {
        nodes.map(|node| self.of(node)).collect()
    }

    fn entries(&mut self, entries: &[cel::common::ast::IdedEntryExpr]) -> Result<Bound, TooCostly> {
        let (mut key_bytes, mut value_bytes, mut steps) = (0u64, 0u64, 0u64);
        for entry in entries {
            let (key, value) = match &entry.expr {
                EntryExpr::MapEntry(entry) => (self.of(&entry.key)?, self.of(&entry.value)?),
                EntryExpr::StructField(field) => (
                    Bound::text(field.field.len() as u64),
                    self.of(&field.value)?,
                ),
            };
            key_bytes = key_bytes.max(key.bytes);
            value_bytes = value_bytes.max(value.bytes);
            steps = steps.saturating_add(key.steps).saturating_add(value.steps);
        }
        Ok(Bound::map(entries.len() as u64, key_bytes, value_bytes).plus_steps(steps))
    }
}

/// What `n` elements of at most `widest` bytes each, `total` bytes together, give in
/// all, where one gives `at_empty` when empty and `at_widest` at its widest. Every
/// bound here is a sum of products of sizes, so it grows with an element's size at
/// least linearly (convex): the sum is largest with the bytes packed into as few
/// elements as they fill, each at its widest (the last one too, rounding up) and the
/// rest empty.
fn over_elements(n: u64, total: u64, widest: u64, at_empty: u64, at_widest: u64) -> u64 {
    let widest = widest.max(1);
    let full = u128::from(total.min(n.saturating_mul(widest)).div_ceil(widest));
    let empty = u128::from(n).saturating_sub(full);
    let sum = full * u128::from(at_widest) + empty * u128::from(at_empty.min(at_widest));
    u64::try_from(sum).unwrap_or(u64::MAX)
}

fn total_steps(bounds: &[Bound]) -> u64 {
    bounds
        .iter()
        .fold(0u64, |sum, bound| sum.saturating_add(bound.steps))
}

fn total_bytes(bounds: &[Bound]) -> u64 {
    bounds
        .iter()
        .fold(0u64, |sum, bound| sum.saturating_add(bound.bytes))
}

/// What calling `function` on `operands` (the target first) can give, and the steps
/// of the call itself (touching its operands and its result).
fn called(function: &str, args: &[IdedExpr], operands: &[Bound]) -> Bound {
    let first = operands.first().copied().unwrap_or(Bound::SCALAR);
    let second = operands.get(1).copied().unwrap_or(Bound::SCALAR);
    let read = total_bytes(operands);
    let result = match function {
        "_?_:_" => {
            let chosen = second.or(operands.get(2).copied().unwrap_or(Bound::SCALAR));
            return Bound { steps: 1, ..chosen };
        }
        "_[_]" | "_[?_]" => {
            return Bound {
                steps: 1,
                ..first.element()
            }
        }
        "_+_" if first.scalar || second.scalar => Bound::SCALAR,
        "_+_" => {
            let joined = Bound {
                bytes: first.bytes.saturating_add(second.bytes),
                items: first.items.saturating_add(second.items),
                item_bytes: first.item_bytes.max(second.item_bytes),
                key_bytes: first.key_bytes.max(second.key_bytes),
                scalar: false,
                collection: first.collection || second.collection,
                steps: 1,
            };
            // Lists are joined by copying their elements (shared values), text by
            // copying its bytes.
            let copied = match joined.collection {
                true => joined.items.saturating_mul(ELEMENT),
                false => joined.bytes.saturating_mul(2),
            };
            return joined.plus_steps(copied);
        }
        "replace" => {
            let to = operands.get(2).copied().unwrap_or(Bound::SCALAR).bytes;
            let text = first.bytes;
            Bound::text(match args.first().map(|from| &from.expr) {
                // Each match of `from` (at most text / from of them) becomes `to`.
                Some(Expr::Literal(LiteralValue::String(from))) if !from.inner().is_empty() => {
                    let from = from.inner().len() as u64;
                    let matches = text / from;
                    text.saturating_add(matches.saturating_mul(to.saturating_sub(from)))
                }
                // An empty pattern puts `to` between every two bytes.
                _ => text.saturating_add(text.saturating_add(1).saturating_mul(to)),
            })
        }
        "split" => {
            // The pieces together hold at most the text.
            let items = first.bytes.saturating_add(1);
            Bound {
                bytes: first.bytes.saturating_add(items.saturating_mul(ELEMENT)),
                items,
                collection: true,
                ..Bound::text(first.bytes)
            }
        }
        "join" => {
            let separator = if operands.len() > 1 { second.bytes } else { 0 };
            Bound::text(
                first
                    .bytes
                    .saturating_add(first.items.saturating_mul(separator)),
            )
        }
        "format" => Bound::text(
            first
                .bytes
                .saturating_add(second.items.saturating_mul(FORMATTED_NUMBER))
                .saturating_add(second.bytes.saturating_mul(3)),
        ),
        "strings.quote" => Bound::text(first.bytes.saturating_mul(6).saturating_add(2)),
        "lists.range" => {
            let items = match args.first().map(|arg| &arg.expr) {
                Some(Expr::Literal(LiteralValue::Int(n))) => {
                    u64::try_from(*n.inner()).unwrap_or(0).min(MAX_RANGE)
                }
                _ => MAX_RANGE,
            };
            Bound::collection(items, SCALAR)
        }
        "flatten" => Bound {
            items: first.bytes / ELEMENT,
            steps: 1,
            ..first
        },
        // A pattern from the rule's source is compiled once, when the rule is defined;
        // one made from the asset's data on every call.
        "matches" => {
            let compiles = match args.last().map(|pattern| &pattern.expr) {
                Some(Expr::Literal(LiteralValue::String(_))) => 0,
                _ => PATTERN_STEPS,
            };
            return Bound::SCALAR.plus_steps(read).plus_steps(compiles);
        }
        // Every pair of elements may be compared.
        "sort" | "distinct" | "@sortByAssociatedKeys" => {
            return Bound { steps: 1, ..first }
                .plus_steps(read)
                .plus_steps(first.items.saturating_mul(first.items))
        }
        // What only reads its operands: a number, a boolean, an index.
        "_==_"
        | "_!=_"
        | "_<_"
        | "_<=_"
        | "_>_"
        | "_>=_"
        | "_&&_"
        | "_||_"
        | "!_"
        | "-_"
        | "_-_"
        | "_*_"
        | "_/_"
        | "_%_"
        | "@in"
        | "@not_strictly_false"
        | "size"
        | "has"
        | "contains"
        | "startsWith"
        | "endsWith"
        | "indexOf"
        | "lastIndexOf"
        | "int"
        | "uint"
        | "double"
        | "bool"
        | "timestamp"
        | "duration"
        | "type" => Bound::SCALAR,
        "string" | "bytes" => Bound::text(first.bytes.max(SCALAR)),
        // The rest give at most what they are given: `trim`, `substring`, `reverse`,
        // `slice`, `lowerAscii`, `dyn`, the `math` functions...
        _ => Bound {
            bytes: read.max(SCALAR),
            items: operands
                .iter()
                .fold(0u64, |sum, operand| sum.saturating_add(operand.items)),
            item_bytes: operands
                .iter()
                .map(|o| o.item_bytes)
                .max()
                .unwrap_or(SCALAR),
            key_bytes: operands.iter().map(|o| o.key_bytes).max().unwrap_or(SCALAR),
            scalar: operands.iter().all(|operand| operand.scalar),
            collection: false,
            steps: 1,
        },
    };
    result.plus_steps(read).plus_steps(result.bytes)
}

fn too_many_steps(node: u64, steps: u64) -> TooCostly {
    TooCostly {
        message: format!(
            "could take up to {steps} steps on one asset, more than the {MAX_STEPS} a rule may \
             take per asset (with assets as large as the service stores); iterate over fewer \
             elements"
        ),
        node,
    }
}

fn human(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / f64::from(1 << 30)),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / f64::from(1 << 20)),
        b => format!("{b} bytes"),
    }
}

#[cfg(test)]
mod tests {
    use super::super::expression::{AssetContext, Expression, ExpressionError};
    use super::*;
    use synapse_shared::domain::AssetState;

    fn refused(source: &str) -> ExpressionError {
        match Expression::compile(source, "when") {
            Ok(_) => panic!("`{source}` compiled"),
            Err(error) => error,
        }
    }

    /// A list literal of the numbers below `n`.
    fn numbers(n: usize) -> String {
        let items: Vec<String> = (0..n).map(|i| i.to_string()).collect();
        format!("[{}]", items.join(","))
    }

    #[test]
    fn text_that_grows_past_the_limit_is_refused_where_it_does_before_it_runs() {
        // Six replacements make 50^6 bytes (15.6 GiB): the trial run on the sample
        // asset aborted the service on the allocation. The fifth makes 297 MiB.
        let fifty = "a".repeat(50);
        let growing: String = (0..6).fold("'a'".to_owned(), |source, _| {
            format!("{source}.replace('a', '{fifty}')")
        });
        let error = refused(&format!("{growing}.size() > 0"));
        assert!(
            error.message.contains("could build a value of up to"),
            "{error:?}"
        );
        assert!(
            error.message.contains("more than the 16.0 MiB"),
            "{error:?}"
        );
        // At the parenthesis of the fifth `.replace(`: 3 bytes of `'a'`, then 67 per
        // call.
        let column = 3 + 4 * 67 + ".replace(".len();
        assert_eq!(
            (error.line, error.column),
            (Some(1), Some(column as u32)),
            "{error:?}"
        );
        // Four stay within the limit (6 MiB).
        let four = (0..4).fold("'a'".to_owned(), |source, _| {
            format!("{source}.replace('a', '{fifty}')")
        });
        Expression::compile(&format!("{four}.size() > 0"), "when").unwrap();
    }

    #[test]
    fn growth_from_the_assets_data_is_bounded_by_what_an_asset_may_hold() {
        // On the sample (an empty name) this is instant; on a 256-byte name the second
        // replacement makes 17 MiB and the third 4 GiB.
        let error = refused(
            "asset.name.replace('', asset.name).replace('', asset.name).replace('', asset.name) != ''",
        );
        assert!(
            error.message.contains("text fields of 256 bytes"),
            "{error:?}"
        );
        Expression::compile("asset.name.replace('', asset.name) != ''", "when").unwrap();
    }

    #[test]
    fn nested_iteration_is_bounded_in_memory_and_steps() {
        let hundred = numbers(100);
        // 100^3 elements took 0.96 s on the trial run (release build) and as long
        // again for every asset of a run; 10^7 ran on after the trial's 2 s timeout.
        let error = refused(&format!(
            "{hundred}.map(a, {hundred}.map(b, {hundred}.map(c, 1))).size() > 0"
        ));
        assert!(error.message.contains("could build a value"), "{error:?}");
        let ten = numbers(10);
        let nested = (0..7).fold("1".to_owned(), |body, i| format!("{ten}.map(v{i}, {body})"));
        refused(&format!("{nested}.size() > 0"));
        // `exists` keeps one boolean however long it runs: only its steps count.
        Expression::compile(
            &format!(
                "{hundred}.exists(a, {hundred}.exists(b, {hundred}.exists(c, a + b + c == 7)))"
            ),
            "when",
        )
        .unwrap();
        let error = refused(&format!(
            "{hundred}.exists(a, {hundred}.exists(b, {hundred}.exists(c, {hundred}.exists(d, \
             {hundred}.exists(e, a + b + c + d + e == 7)))))"
        ));
        assert!(error.message.contains("steps on one asset"), "{error:?}");
    }

    #[test]
    fn deeply_nested_macros_are_checked_at_once() {
        // Each step of a comprehension is bounded three times; without remembering
        // what was worked out, 14 nested `map`s took 19 s to check (debug build).
        let nested = (0..20).fold("1".to_owned(), |body, i| format!("[1].map(v{i}, {body})"));
        let started = std::time::Instant::now();
        Expression::compile(&format!("{nested}.size() > 0"), "when").unwrap();
        let exists = (0..20).fold("true".to_owned(), |body, i| {
            format!("[1, 2].exists(v{i}, v{i} > 0 && {body})")
        });
        Expression::compile(&exists, "when").unwrap();
        let took = started.elapsed();
        assert!(took < std::time::Duration::from_secs(2), "{took:?}");
    }

    #[test]
    fn a_pattern_made_from_the_assets_data_counts_as_compiled_on_every_call() {
        // Found by helpers: a pattern per property, 200 of 4 KiB of counted
        // repetitions, compiled per asset took 18 s per asset; bounded at 1 MiB
        // compiled, a failing one still took 60-75 ms (12-15 s per asset). What one
        // compiles to is bounded at 256 KiB now, a failure is remembered as a pattern
        // is, and each compile of a pattern from the data counts 2^24 steps: a few per
        // asset pass, one per property does not.
        let big = "[A-Za-z]{1,100}".repeat(272) + "000";
        let asset = AssetState {
            id: uuid::Uuid::nil(),
            tag: "JB-1".into(),
            asset_type: "JUNCTION_BOX".into(),
            discipline: "INSTRUMENTATION".into(),
            name: Some("x".repeat(MAX_TEXT)),
            area: None,
            properties: [("pattern".to_owned(), serde_json::Value::String(big))]
                .into_iter()
                .collect(),
            version: 1,
        };
        let one = Expression::compile("asset.name.matches(asset.properties.pattern)", "when");
        let error = one
            .unwrap()
            .evaluate(&AssetContext::new(&asset))
            .unwrap_err();
        assert!(error.0.contains("exceeds size limit"), "{error:?}");
        let error = refused(
            "asset.properties.exists(k, asset.name.matches(string(asset.properties[k]) + asset.tag))",
        );
        assert!(error.message.contains("steps on one asset"), "{error:?}");
        // A pattern of the rule's own is compiled once, when the rule is defined.
        Expression::compile(
            "asset.properties.exists(k, asset.properties.exists(j, \
             string(asset.properties[k]).matches('^[A-Z]{2}-[0-9]+$')))",
            "when",
        )
        .unwrap();
    }

    #[test]
    fn macros_over_the_pieces_of_a_split_property_are_bounded_by_the_text_they_share() {
        // Found by a helper: 4,097 pieces of up to 4,096 bytes were bounded as if each
        // were that long (16.1 MiB); together they hold the 4 KiB of the property.
        for source in [
            "asset.properties.junction_box.split('-').map(t, t.trim()).size() > 0",
            "asset.properties.cable_list.split(',').map(t, t.trim()).filter(t, t != '').size() > 0",
            "asset.properties.description.split('\\n').map(l, l.trim()).filter(l, l != '').join(' ') != ''",
            "asset.properties.junction_box.split('-').map(t, t.size()).size() > 0",
            "asset.properties.exists(k, type(asset.properties[k]) == string \
             && asset.properties[k].split(',').exists(w, w.trim() == 'ATEX'))",
        ] {
            if let Err(error) = Expression::compile(source, "when") {
                panic!("`{source}`: {error:?}");
            }
        }
        // What a piece can grow to is still counted: each piece repeated between
        // every two bytes of itself is quadratic in its size.
        let error = refused(
            "asset.properties.note.split(' ').map(w, w.replace('', w)).join('').size() > 0",
        );
        assert!(error.message.contains("could build a value"), "{error:?}");
    }

    #[test]
    fn the_elements_sharing_their_bytes_give_most_when_packed_into_few() {
        // 10 elements, 100 bytes in all, each at most 40: 3 at their widest.
        assert_eq!(over_elements(10, 100, 40, 1, 50), 3 * 50 + 7);
        // Nothing shared beyond what each holds: every one at its widest.
        assert_eq!(over_elements(10, 1_000, 40, 1, 50), 10 * 50);
        assert_eq!(over_elements(0, 100, 40, 1, 50), 0);
    }

    #[test]
    fn a_qualified_function_is_bounded_as_what_it_makes() {
        // `lists.range` makes up to a million elements: a `map` over two of them
        // builds 10^12.
        let error =
            refused("lists.range(1000000).map(i, lists.range(1000000).map(j, i)).size() > 0");
        assert!(error.message.contains("could build a value"), "{error:?}");
        Expression::compile("lists.range(10).map(i, i * 2).size() == 10", "when").unwrap();
        let error = refused(
            "strings.quote(strings.quote(strings.quote(strings.quote(asset.name.replace('', asset.name))))) != ''",
        );
        assert!(error.message.contains("could build a value"), "{error:?}");
    }

    #[test]
    fn everyday_expressions_are_well_within_the_limits() {
        for source in [
            "asset.asset_type == 'ELECTRIC_MOTOR' && asset.properties.rated_power_kw > 55",
            "asset.properties.rated_power_kw > 100 ? 95 : 50",
            "has(asset.properties.driver) && asset.properties.driver != ''",
            "asset.properties.exists(k, k.startsWith('rated_') && asset.properties[k] == 0)",
            "asset.properties.all(k, asset.properties[k] != '')",
            "asset.tag.split('-').map(part, part.lowerAscii()).join('_') != ''",
            "['A', 'B', 'C'].exists(area, area == asset.area)",
            "asset.tag.matches('^[FPLT][TV]-[0-9]+$')",
            "'%s-%d'.format([asset.tag, asset.version]) != ''",
            "asset.properties.filter(k, k.endsWith('_kw')).size() < 3",
            "asset.tag + '-' + asset.area + '-' + asset.name != ''",
            // Splitting a property, or a property's name, and replacing a fixed text
            // (a helper found these refused: every piece was bounded as the whole).
            "int(asset.properties.junction_box.split('-')[2]) > 3",
            "asset.properties.mcc.split('-')[1] == 'U100'",
            "asset.properties.fluid_name.split(' ').join('_') == 'lube_oil'",
            "asset.properties.exists(k, k.split('_')[0] == 'rated')",
            "asset.properties.line.replace(' ', '_').replace('/', '_').replace('\"', '_')\
             .replace('.', '_').replace(',', '_').replace(';', '_').replace(':', '_')\
             .replace('(', '_').replace(')', '_').replace('[', '_').replace(']', '_')\
             .replace('#', '_') != ''",
        ] {
            if let Err(error) = Expression::compile(source, "when") {
                panic!("`{source}`: {error:?}");
            }
        }
    }

    #[test]
    fn a_bound_holds_what_an_evaluation_gives() {
        // The bound of a growing text is at least what it makes of a full-size asset:
        // an empty pattern puts the tag between every two bytes of the name, and each
        // `a` of the label becomes four bytes.
        let source =
            "asset.name.replace('', asset.tag) + asset.properties.label.replace('a', 'bbbb')";
        let compiled = Expression::compile(source, "value").unwrap();
        let asset = AssetState {
            id: uuid::Uuid::nil(),
            tag: "T".repeat(MAX_TEXT),
            asset_type: "SAMPLE".into(),
            discipline: "SAMPLE".into(),
            name: Some("N".repeat(MAX_TEXT)),
            area: None,
            properties: [(
                "label".to_owned(),
                serde_json::Value::String("a".repeat(MAX_STRING_PROPERTY)),
            )]
            .into_iter()
            .collect(),
            version: 1,
        };
        let made = compiled.evaluate(&AssetContext::new(&asset)).unwrap();
        let made = made.as_str().unwrap().len() as u64;
        let program = cel::Program::compile(source).unwrap();
        let bound = Bounds::default().of(program.expression()).unwrap();
        assert!(
            made <= bound.bytes,
            "made {made} bytes, bound {}",
            bound.bytes
        );
        assert!(
            made > bound.bytes / 2,
            "made {made} bytes, bound {}",
            bound.bytes
        );
    }
}

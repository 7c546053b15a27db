//! CEL expressions over an asset, compiled once per rule version.
//!
//! Conditions, property values and the `{...}` parts of templates are CEL (the `cel`
//! crate), evaluated with one variable, `asset`: `{id, tag, asset_type, discipline,
//! name, area, properties, version}`. At definition time an expression is parsed
//! (syntax errors carry line and column), checked for unknown variables and unknown
//! asset fields (with the position of the offending selection), and evaluated once
//! against a sample asset to catch type errors such as `asset.tag > 5`.

use cel::common::ast::{EntryExpr, Expr};
use cel::common::types::{
    CelBool, CelDouble, CelInt, CelList, CelMap, CelMapKey, CelNull, CelString, CelUInt,
};
use cel::common::value::Val;
use cel::{extensions, Context, Env, ExecutionError, IdedExpr, Program};
use regex::Regex;
use serde::Serialize;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use synapse_shared::domain::AssetState;
use uuid::Uuid;

/// The deepest an expression's syntax tree may nest. Evaluating it recurses that deep
/// on the stack of the thread running the rule ([`crate::THREAD_STACK`] for the
/// service's workers); a debug build needs up to about 40 KiB per level.
pub const MAX_DEPTH: usize = 64;
/// The longest source of one expression, in bytes. Parsing recurses once per operator
/// of a chain (`1 + 1 + ...`), on a thread of its own with [`COMPILE_STACK`] of stack:
/// 2,048 operators parse in a debug build with room to spare.
pub const MAX_SOURCE_BYTES: usize = 4_096;
/// Stack of the thread an expression is compiled on: reserved, and only touched as
/// deep as the parser goes.
const COMPILE_STACK: usize = 256 << 20;

/// The fields of `asset` an expression may select.
pub const ASSET_FIELDS: &[&str] = &[
    "id",
    "tag",
    "asset_type",
    "discipline",
    "name",
    "area",
    "properties",
    "version",
];

/// The CEL environment every rule compiles and runs in: the standard library plus the
/// strings (`replace`, `substring`, `split`, `lowerAscii`...), lists and math
/// extensions, so engineers can derive tags and values without custom functions; and
/// `matches`, registered here (see [`matches`]).
static ENVIRONMENT: LazyLock<Arc<Env>> = LazyLock::new(|| {
    let mut env = Env::stdlib();
    for extension in [extensions::strings, extensions::lists, extensions::math] {
        // Registering a built-in extension on the standard library only fails if the
        // two declare the same overload, which the crate's own tests rule out.
        if let Err(error) = env.add_extension(extension) {
            tracing::error!(?error, "a CEL extension could not be registered");
        }
    }
    // Fails only if the standard library declared `matches` too: the workspace builds
    // `cel` without its `regex` feature so that it does not.
    let registered = cel::add_overload!(env, fn matches: (CelString, CelString) -> Result<CelBool>, id = "matches")
        .and_then(|()| cel::add_member_overload!(env, fn matches: (CelString, CelString) -> Result<CelBool>));
    if let Err(error) = registered {
        tracing::error!(?error, "CEL `matches` could not be registered");
    }
    Arc::new(env)
});

/// CEL's `matches(text, pattern)` and `text.matches(pattern)` (RE2 syntax): whether
/// the pattern matches anywhere in the text. The `cel` crate's own compiled the
/// pattern on every call; a rule with `asset.tag.matches('^[FPLT]V-[0-9]+$')` spent
/// most of a run compiling it once per asset. This compiles each pattern once.
fn matches(text: &CelString<'_>, pattern: &CelString<'_>) -> Result<CelBool, ExecutionError> {
    let compiled = compiled(pattern.inner()).map_err(|error| ExecutionError::FunctionError {
        function: "matches".to_owned(),
        message: format!("'{}' not a valid regex:\n{error}", pattern.inner()),
    })?;
    Ok(CelBool::from(compiled.is_match(text.inner())))
}

/// Most patterns kept, compiled or refused: rules name a handful; a pattern built from
/// each asset's data must not grow the cache without bound, so it starts over when
/// full.
const MAX_PATTERNS: usize = 256;

/// Patterns compiled, and those that failed to (a pattern built from the asset's data
/// that fails for one asset fails for the next without compiling again).
type Compiled = Result<Arc<Regex>, regex::Error>;

static PATTERNS: LazyLock<Mutex<HashMap<String, Compiled>>> = LazyLock::new(Mutex::default);

/// The most a pattern may compile to. Patterns in a rule's source are compiled when
/// it is defined, but one built from an asset's data is compiled as the rule runs, per
/// asset: with the crate's default (10 MiB) a 4 KiB pattern of counted repetitions
/// took 90 ms to compile, 200 of them per asset 18 s; at 1 MiB a failing one still took
/// 60-75 ms (debug build). Patterns that name tags compile to a few KiB.
const PATTERN_SIZE_LIMIT: usize = 256 << 10;

fn compiled(pattern: &str) -> Compiled {
    let known = PATTERNS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(pattern)
        .cloned();
    if let Some(compiled) = known {
        return compiled;
    }
    // Compiled without the lock: a slow pattern holds up no other rule's `matches`.
    let compiled = regex::RegexBuilder::new(pattern)
        .size_limit(PATTERN_SIZE_LIMIT)
        .build()
        .map(Arc::new);
    let mut patterns = PATTERNS.lock().unwrap_or_else(PoisonError::into_inner);
    if patterns.len() >= MAX_PATTERNS {
        patterns.clear();
    }
    patterns.insert(pattern.to_owned(), compiled.clone());
    compiled
}

/// A rejected expression: where and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExpressionError {
    /// Which part of the rule, e.g. `when` or `then[2].value`.
    pub field: String,
    pub message: String,
    /// 1-based line and column in the expression, when known.
    pub line: Option<u32>,
    pub column: Option<u32>,
}

/// A compiled CEL expression.
#[derive(Clone)]
pub struct Expression {
    pub source: String,
    program: Arc<Program>,
}

impl std::fmt::Debug for Expression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Expression").field(&self.source).finish()
    }
}

/// Why evaluating an expression failed for one asset (a RULE_ERROR, not a 4xx).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct EvaluationError(pub String);

impl Expression {
    /// Parse and check `source`; `field` names it in errors.
    pub fn compile(source: &str, field: &str) -> Result<Self, ExpressionError> {
        Self::compile_and_try(source, field).map(|(expression, _)| expression)
    }

    /// Parse and check a condition: as [`Expression::compile`], and where the trial run
    /// gives a value, it must be `true` or `false` (`asset.tag` would be an error for
    /// every asset).
    pub fn condition(source: &str, field: &str) -> Result<Self, ExpressionError> {
        let (expression, trial) = Self::compile_and_try(source, field)?;
        match trial {
            Some(cel::Value::Bool(_)) | None => Ok(expression),
            Some(other) => Err(ExpressionError {
                field: field.to_owned(),
                message: format!(
                    "a condition must give true or false; this gives a value of type {}",
                    other.type_of()
                ),
                line: None,
                column: None,
            }),
        }
    }

    /// Compile, then run on a sample asset ([`Expression::check_types`]): the
    /// expression, and what the trial gave if it gave a value.
    ///
    /// Runs on a thread with a stack of [`COMPILE_STACK`]: the parser recurses per
    /// nesting level and per operator of a chain, and a worker's stack overflowed (which
    /// aborts the process) at 12 nested parentheses in a debug build. Expressions too
    /// deep to evaluate safely later are refused ([`MAX_DEPTH`]).
    fn compile_and_try(
        source: &str,
        field: &str,
    ) -> Result<(Self, Option<cel::Value>), ExpressionError> {
        let refused = |message: String| ExpressionError {
            field: field.to_owned(),
            message,
            line: None,
            column: None,
        };
        if source.len() > MAX_SOURCE_BYTES {
            return Err(refused(format!(
                "longer than {MAX_SOURCE_BYTES} bytes ({}); split it up",
                source.len()
            )));
        }
        std::thread::scope(|scope| {
            std::thread::Builder::new()
                .name("cel-compile".to_owned())
                .stack_size(COMPILE_STACK)
                .spawn_scoped(scope, || Self::compile_here(source, field))
                .map_err(|error| refused(format!("could not be compiled now: {error}")))?
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// [`Expression::compile_and_try`] on the caller's stack.
    fn compile_here(
        source: &str,
        field: &str,
    ) -> Result<(Self, Option<cel::Value>), ExpressionError> {
        let program = ENVIRONMENT.compile(source).map_err(|errors| {
            let first = errors.errors.first();
            ExpressionError {
                field: field.to_owned(),
                message: first
                    .map(|error| error.msg.clone())
                    .map(|message| match message.contains("Recursion limit") {
                        // The parser's own words were its debug text (`OtherError(...)`).
                        true => "nested too deep to parse (about 90 levels of parentheses \
                                 or operators at most): write it with fewer levels"
                            .to_owned(),
                        false => message,
                    })
                    .unwrap_or_else(|| errors.to_string()),
                line: first.and_then(|error| u32::try_from(error.pos.0).ok()),
                // The parser's columns count from 1 already.
                column: first.and_then(|error| u32::try_from(error.pos.1).ok()),
            }
        })?;
        check_references(&program, field)?;
        super::cost::check(program.expression()).map_err(|refusal| {
            let (line, column) = program
                .source_info()
                .offset_for(refusal.node)
                .map(|(start, _)| line_and_column(&program.source_info().source, start as usize))
                .map_or((None, None), |(line, column)| (Some(line), Some(column)));
            ExpressionError {
                field: field.to_owned(),
                message: refusal.message,
                line,
                column,
            }
        })?;
        let expression = Self {
            source: source.to_owned(),
            program: Arc::new(program),
        };
        let trial = expression.check_types(field)?;
        Ok((expression, trial))
    }

    /// Evaluate against an asset, as JSON.
    pub fn evaluate(&self, asset: &AssetContext) -> Result<Value, EvaluationError> {
        let value = self
            .program
            .execute(&asset.context)
            .map_err(|error| EvaluationError(error.to_string()))?;
        value.json().map_err(|error| {
            EvaluationError(format!("result is not representable as JSON: {error:?}"))
        })
    }

    /// Evaluate a property's value, as JSON. A duration (it would become nanoseconds)
    /// and bytes (base64) have no faithful JSON form and are refused; a timestamp
    /// becomes its RFC 3339 text.
    pub fn evaluate_property(&self, asset: &AssetContext) -> Result<Value, EvaluationError> {
        let value = self
            .program
            .execute(&asset.context)
            .map_err(|error| EvaluationError(error.to_string()))?;
        let refused = match &value {
            cel::Value::Duration(_) => Some("a duration: give a number, e.g. `d.getSeconds()`"),
            cel::Value::Bytes(_) => Some("bytes: give a string, e.g. `string(b)`"),
            cel::Value::Function(..) | cel::Value::Opaque(_) | cel::Value::Struct(_) => {
                Some("not a value a property can hold")
            }
            _ => None,
        };
        if let Some(refused) = refused {
            return Err(EvaluationError(format!(
                "the value is {refused}; properties are numbers, strings or booleans"
            )));
        }
        value.json().map_err(|error| {
            EvaluationError(format!("result is not representable as JSON: {error:?}"))
        })
    }

    /// Evaluate as a condition: must yield a boolean.
    pub fn is_true(&self, asset: &AssetContext) -> Result<bool, EvaluationError> {
        match self.evaluate(asset)? {
            Value::Bool(value) => Ok(value),
            other => Err(EvaluationError(format!(
                "condition gave {other}, not a boolean"
            ))),
        }
    }

    /// A trial run on a sample asset with no properties. Errors that depend on data
    /// (a missing property, an index past the end of the sample's empty name, a division
    /// by the sample's version less one) are fine; errors that no data can fix (comparing
    /// a string with a number, calling a function on the wrong type) are refused now.
    fn check_types(&self, field: &str) -> Result<Option<cel::Value>, ExpressionError> {
        let sample = AssetState {
            id: Uuid::nil(),
            tag: "SAMPLE-1".to_owned(),
            asset_type: "SAMPLE".to_owned(),
            discipline: "SAMPLE".to_owned(),
            name: None,
            area: None,
            properties: serde_json::Map::new(),
            version: 1,
        };
        let sample = AssetContext::new(&sample);
        self.check_operands(field, &sample)?;
        let outcome = self.program.execute(&sample.context);
        match outcome {
            Ok(value) => Ok(Some(value)),
            // A pattern that is no regular expression is as wrong on every asset.
            Err(error) if !is_type_error(&error) && !is_bad_pattern(&error) => Ok(None),
            Err(error) => Err(ExpressionError {
                field: field.to_owned(),
                message: format!("type error: {error}"),
                line: None,
                column: None,
            }),
        }
    }

    /// Every call (an operator or a function, outside comprehensions) evaluated on its
    /// own on the sample, and the smallest that fails on types is the error, with where
    /// it starts: `asset.version + 'x'` is pointed at, and a type error behind a test
    /// the sample fails (`asset.asset_type == 'MOTOR' && asset.tag > 5`) is found too.
    /// Only errors of types count here: a call may well fail on the sample's values
    /// (`asset.tag.substring(10)`) where a guard keeps it from running.
    fn check_operands(&self, field: &str, sample: &AssetContext) -> Result<(), ExpressionError> {
        let info = self.program.source_info();
        // (nodes in the failing call, where it starts, the error)
        let mut found: Option<(usize, Option<u32>, ExecutionError)> = None;
        walk(
            self.program.expression(),
            &mut Vec::new(),
            1,
            &mut |node, bound, _| {
                if !bound.is_empty() || !matches!(node.expr, Expr::Call(_)) {
                    return;
                }
                let Err(error) = cel::Value::resolve(node, &sample.context) else {
                    return;
                };
                if !is_type_error(&error) {
                    return;
                }
                let (mut size, mut start) = (0, None);
                walk(node, &mut Vec::new(), 1, &mut |part, _, _| {
                    size += 1;
                    if let Some((offset, _)) = info.offset_for(part.id) {
                        start = Some(start.map_or(offset, |start: u32| start.min(offset)));
                    }
                });
                if found.as_ref().is_none_or(|(smallest, ..)| size < *smallest) {
                    found = Some((size, start, error));
                }
            },
        );
        match found {
            None => Ok(()),
            Some((_, start, error)) => {
                let (line, column) = start
                    .map(|offset| line_and_column(&info.source, offset as usize))
                    .map_or((None, None), |(line, column)| (Some(line), Some(column)));
                Err(ExpressionError {
                    field: field.to_owned(),
                    message: format!("type error: {error}"),
                    line,
                    column,
                })
            }
        }
    }
}

/// An asset bound as the CEL variable `asset`, built once per asset state. Built as
/// CEL values directly, borrowing the asset's strings: this runs once per asset and
/// rule of an execution, and going through `cel::to_value` built every value twice
/// (a `cel::Value` tree, then the interpreter's own values), copying every string.
pub struct AssetContext<'a> {
    context: Context<'a, 'a>,
}

impl<'a> AssetContext<'a> {
    /// `asset` as `{id, tag, asset_type, discipline, name, area, properties,
    /// version}`; an absent name or area is the empty string.
    pub fn new(asset: &'a AssetState) -> Self {
        let text = |value: &'a str| -> Box<dyn Val + 'a> { Box::new(CelString::from(value)) };
        let fields: [(&'static str, Box<dyn Val + 'a>); 8] = [
            ("id", Box::new(CelString::from(asset.id.to_string()))),
            ("tag", text(&asset.tag)),
            ("asset_type", text(&asset.asset_type)),
            ("discipline", text(&asset.discipline)),
            ("name", text(asset.name.as_deref().unwrap_or_default())),
            ("area", text(asset.area.as_deref().unwrap_or_default())),
            ("properties", object(&asset.properties)),
            ("version", number(&asset.version.into())),
        ];
        let fields: HashMap<CelMapKey<'a>, Box<dyn Val + 'a>> = fields
            .into_iter()
            .map(|(name, value)| (CelMapKey::from(name), value))
            .collect();
        let mut context = Context::with_env(ENVIRONMENT.clone());
        context.add_variable_as_val("asset", Box::new(CelMap::from(fields)));
        Self { context }
    }
}

/// A JSON value as a CEL value: whole numbers are `int` (CEL's integer literals are
/// too, so `asset.properties.rated_power_kw * 2` works), other numbers `double`.
fn json_value(value: &Value) -> Box<dyn Val + '_> {
    match value {
        Value::Null => Box::new(CelNull),
        Value::Bool(value) => Box::new(CelBool::from(*value)),
        Value::Number(value) => number(value),
        Value::String(value) => Box::new(CelString::from(value.as_str())),
        Value::Array(items) => Box::new(CelList::from(
            items.iter().map(json_value).collect::<Vec<_>>(),
        )),
        Value::Object(map) => object(map),
    }
}

fn object(map: &serde_json::Map<String, Value>) -> Box<dyn Val + '_> {
    let entries: HashMap<CelMapKey<'_>, Box<dyn Val + '_>> = map
        .iter()
        .map(|(key, value)| (CelMapKey::from(key.as_str()), json_value(value)))
        .collect();
    Box::new(CelMap::from(entries))
}

///
/// Not `uint` for those above zero, as the JSON mapping of the `cel` crate does: CEL has
/// no arithmetic between `uint` and `int`, so `rated_power_kw + 10` failed for every
/// asset whose power was a whole number, and worked for those with a negative one.
fn number(value: &serde_json::Number) -> Box<dyn Val + 'static> {
    if let Some(signed) = value.as_i64() {
        Box::new(CelInt::from(signed))
    } else if let Some(unsigned) = value.as_u64() {
        Box::new(CelUInt::from(unsigned))
    } else {
        Box::new(CelDouble::from(value.as_f64().unwrap_or(f64::NAN)))
    }
}

/// Errors that come from the types of the values alone: whatever the values, the same
/// types fail the same way.
/// An error of [`matches`]: its pattern does not compile.
fn is_bad_pattern(error: &ExecutionError) -> bool {
    matches!(error, ExecutionError::FunctionError { function, .. } if function == "matches")
}

fn is_type_error(error: &ExecutionError) -> bool {
    matches!(
        error,
        ExecutionError::NoSuchOverload(_)
            | ExecutionError::ValuesNotComparable(..)
            | ExecutionError::UnsupportedBinaryOperator(..)
            | ExecutionError::UnsupportedTargetType { .. }
            | ExecutionError::NotSupportedAsMethod { .. }
            | ExecutionError::UnexpectedType { .. }
    )
}

/// CEL's names of types, which are identifiers too (`type(x) == double`).
const TYPE_NAMES: &[&str] = &[
    "bool",
    "bytes",
    "double",
    "int",
    "list",
    "map",
    "null_type",
    "string",
    "type",
    "uint",
];

/// The functions of the extensions that are called by a qualified name
/// (`math.ceil(x)`): the parser reads `math` as the call's target, a variable.
pub const QUALIFIED_FUNCTIONS: &[&str] = &[
    "lists.range",
    "math.abs",
    "math.bitAnd",
    "math.bitNot",
    "math.bitOr",
    "math.bitShiftLeft",
    "math.bitShiftRight",
    "math.bitXor",
    "math.ceil",
    "math.floor",
    "math.isFinite",
    "math.isInf",
    "math.isNaN",
    "math.round",
    "math.sign",
    "math.sqrt",
    "math.trunc",
    "strings.quote",
];

/// The qualified name of a call such as `math.ceil(x)`, when its target spells the
/// namespace of one of the [`QUALIFIED_FUNCTIONS`]: `Ok(name)` for one of them, `Err`
/// with the name for another function of such a namespace (`math.ceiling`).
pub fn qualified_function(call: &cel::common::ast::CallExpr) -> Option<Result<String, String>> {
    let Expr::Ident(namespace) = &call.target.as_deref()?.expr else {
        return None;
    };
    let is_namespace = QUALIFIED_FUNCTIONS
        .iter()
        .any(|name| name.split('.').next() == Some(namespace.as_str()));
    if !is_namespace {
        return None;
    }
    let name = format!("{namespace}.{}", call.func_name);
    Some(if QUALIFIED_FUNCTIONS.contains(&name.as_str()) {
        Ok(name)
    } else {
        Err(name)
    })
}

/// Only `asset` (and the names of types) may be referenced, and only its known fields
/// selected; functions called by a qualified name must exist.
fn check_references(program: &Program, field: &str) -> Result<(), ExpressionError> {
    // The namespaces of qualified calls (`math` of `math.ceil(x)`), which are no
    // variables: by node id.
    let mut namespaces = Vec::new();
    walk(
        program.expression(),
        &mut Vec::new(),
        1,
        &mut |node, _, _| {
            if let Expr::Call(call) = &node.expr {
                if let (Some(Ok(_)), Some(target)) = (qualified_function(call), &call.target) {
                    namespaces.push(target.id);
                }
            }
        },
    );
    let mut error = None;
    walk(
        program.expression(),
        &mut Vec::new(),
        1,
        &mut |node, bound, depth| {
            if error.is_some() {
                return;
            }
            // Byte offset of the node (for a selection: its `.`); reported as the 1-based
            // line and column of what follows.
            let position = || {
                program.source_info().offset_for(node.id).map(|(start, _)| {
                    let skip_dot = usize::from(matches!(node.expr, Expr::Select(_)));
                    line_and_column(&program.source_info().source, start as usize + skip_dot)
                })
            };
            let problem = match &node.expr {
            _ if depth > MAX_DEPTH => Some(format!(
                "nested more than {MAX_DEPTH} levels deep (a chain of operators counts one level per operator); split it up"
            )),
            Expr::Call(call) => match qualified_function(call) {
                Some(Err(name)) => Some(format!(
                    "unknown function `{name}`; the qualified ones are {}",
                    QUALIFIED_FUNCTIONS.join(", ")
                )),
                _ => None,
            },
            Expr::Ident(name)
                if name != "asset"
                    && !TYPE_NAMES.contains(&name.as_str())
                    && !bound.contains(name)
                    && !namespaces.contains(&node.id) =>
            {
                Some(format!("unknown variable `{name}`; rules can use `asset`"))
            }
            Expr::Select(select) => match &select.operand.expr {
                Expr::Ident(name) if name == "asset" && !ASSET_FIELDS.contains(&select.field.as_str()) => {
                    Some(format!(
                        "unknown asset field `{}`; fields are {} (properties via asset.properties.NAME)",
                        select.field,
                        ASSET_FIELDS.join(", ")
                    ))
                }
                _ => None,
            },
            _ => None,
        };
            if let Some(message) = problem {
                let (line, column) =
                    position().map_or((None, None), |(line, column)| (Some(line), Some(column)));
                error = Some(ExpressionError {
                    field: field.to_owned(),
                    message,
                    line,
                    column,
                });
            }
        },
    );
    error.map_or(Ok(()), Err)
}

/// 1-based line and column of a byte offset.
fn line_and_column(source: &str, offset: usize) -> (u32, u32) {
    let before = &source[..offset.min(source.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .map_or(0, |text| text.chars().count())
        + 1;
    (line as u32, column as u32)
}

/// What [`walk`] calls for each node: the node, the comprehension variables in scope,
/// and its depth (1 for the root).
type Visit<'a> = dyn FnMut(&IdedExpr, &[String], usize) + 'a;

/// Visit every node, tracking comprehension variables in scope and depth.
fn walk(node: &IdedExpr, bound: &mut Vec<String>, depth: usize, visit: &mut Visit) {
    visit(node, bound, depth);
    let depth = depth + 1;
    match &node.expr {
        Expr::Call(call) => {
            if let Some(target) = &call.target {
                walk(target, bound, depth, visit);
            }
            for argument in &call.args {
                walk(argument, bound, depth, visit);
            }
        }
        Expr::Select(select) => walk(&select.operand, bound, depth, visit),
        Expr::List(list) => list
            .elements
            .iter()
            .for_each(|element| walk(element, bound, depth, visit)),
        Expr::Map(map) => visit_entries(&map.entries, bound, depth, visit),
        Expr::Struct(structure) => visit_entries(&structure.entries, bound, depth, visit),
        Expr::Comprehension(comprehension) => {
            walk(&comprehension.iter_range, bound, depth, visit);
            let added = 2 + usize::from(comprehension.iter_var2.is_some());
            bound.push(comprehension.iter_var.clone());
            bound.push(comprehension.accu_var.clone());
            if let Some(second) = &comprehension.iter_var2 {
                bound.push(second.clone());
            }
            for part in [
                &comprehension.accu_init,
                &comprehension.loop_cond,
                &comprehension.loop_step,
                &comprehension.result,
            ] {
                walk(part, bound, depth, visit);
            }
            bound.truncate(bound.len() - added);
        }
        Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => {}
    }
}

fn visit_entries(
    entries: &[cel::common::ast::IdedEntryExpr],
    bound: &mut Vec<String>,
    depth: usize,
    visit: &mut Visit,
) {
    for entry in entries {
        match &entry.expr {
            EntryExpr::MapEntry(map_entry) => {
                walk(&map_entry.key, bound, depth, visit);
                walk(&map_entry.value, bound, depth, visit);
            }
            EntryExpr::StructField(field) => walk(&field.value, bound, depth, visit),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Map};

    fn motor(power: Value) -> AssetState {
        let mut properties = Map::new();
        properties.insert("rated_power_kw".into(), power);
        AssetState {
            id: Uuid::nil(),
            tag: "M-101".into(),
            asset_type: "ELECTRIC_MOTOR".into(),
            discipline: "ELECTRICAL".into(),
            name: None,
            area: Some("U100".into()),
            properties,
            version: 3,
        }
    }

    #[test]
    fn a_condition_reads_asset_fields_and_numeric_properties() {
        let condition = Expression::compile(
            "asset.asset_type == 'ELECTRIC_MOTOR' && asset.properties.rated_power_kw > 55",
            "when",
        )
        .unwrap();
        assert!(condition
            .is_true(&AssetContext::new(&motor(json!(75))))
            .unwrap());
        assert!(condition
            .is_true(&AssetContext::new(&motor(json!(75.5))))
            .unwrap());
        assert!(!condition
            .is_true(&AssetContext::new(&motor(json!(30))))
            .unwrap());
    }

    #[test]
    fn the_asset_variable_is_the_json_document_of_the_asset() {
        let mut asset = motor(json!(-75.5));
        asset.properties.insert("count".into(), json!(7));
        asset.properties.insert("tagged".into(), json!(true));
        asset.properties.insert("label".into(), json!("=A1"));
        asset.properties.insert("minus".into(), json!(-4));
        asset.properties.insert("list".into(), json!(["a", "b"]));
        asset.properties.insert("nothing".into(), json!(null));
        let as_json = json!({
            "id": asset.id.to_string(),
            "tag": asset.tag,
            "asset_type": asset.asset_type,
            "discipline": asset.discipline,
            "name": "",
            "area": asset.area,
            "properties": asset.properties,
            "version": asset.version,
        });
        let context = AssetContext::new(&asset);
        let whole = Expression::compile("asset", "value").unwrap();
        assert_eq!(whole.evaluate(&context).unwrap(), as_json);
        // Whole numbers are `int`, others `double` (equality alone would not tell: CEL
        // compares 3u and 3 as equal).
        let types = Expression::compile(
            "type(asset.version) == int && type(asset.properties.count) == int
             && type(asset.properties.minus) == int
             && type(asset.properties.rated_power_kw) == double
             && type(asset.properties.tagged) == bool && type(asset.id) == string
             && asset.version == 3 && asset.name == '' && asset.area == 'U100'
             && asset.properties.label == '=A1' && asset.properties.minus == -4
             && asset.properties.list[1] == 'b' && asset.properties.nothing == null",
            "when",
        );
        assert!(types.unwrap().is_true(&context).unwrap());
    }

    #[test]
    fn whole_number_properties_take_part_in_arithmetic() {
        let cases = [
            ("asset.properties.rated_power_kw * 2", json!(75), json!(150)),
            ("asset.properties.rated_power_kw + 10", json!(75), json!(85)),
            (
                "asset.properties.rated_power_kw - 100",
                json!(75),
                json!(-25),
            ),
            ("asset.properties.rated_power_kw / 2", json!(75), json!(37)),
            (
                "double(asset.properties.rated_power_kw) * 1.25",
                json!(75),
                json!(93.75),
            ),
            (
                "double(asset.properties.rated_power_kw) * 1.25",
                json!(75.5),
                json!(94.375),
            ),
            (
                "asset.properties.rated_power_kw * 2.0",
                json!(75.5),
                json!(151.0),
            ),
            ("asset.version + 1", json!(0), json!(4)),
        ];
        for (source, power, expected) in cases {
            let asset = motor(power);
            let value = Expression::compile(source, "value")
                .unwrap()
                .evaluate(&AssetContext::new(&asset));
            assert_eq!(value, Ok(expected), "{source}");
        }
    }

    #[test]
    fn a_syntax_error_reports_line_and_column() {
        let error = Expression::compile("asset.tag == ", "when").unwrap_err();
        assert_eq!(error.field, "when");
        assert_eq!(error.line, Some(1));
        assert!(error.column.is_some());
        // Where the offending token starts, counted from 1.
        for (source, position) in [
            ("asset.tag == == 1", (1, 14)),
            ("asset.tag = 'x'", (1, 11)),
            ("asset.tag == 'x' &&\n  ) ", (2, 3)),
        ] {
            let error = Expression::compile(source, "when").unwrap_err();
            assert_eq!(
                (error.line, error.column),
                (Some(position.0), Some(position.1)),
                "{source}: {error:?}"
            );
        }
    }

    #[test]
    fn unknown_fields_and_variables_are_refused_with_their_position() {
        let error =
            Expression::compile("asset.tag == 'x' && asset.colour == 'red'", "when").unwrap_err();
        assert!(
            error.message.contains("unknown asset field `colour`"),
            "{error:?}"
        );
        assert_eq!(error.line, Some(1));
        assert_eq!(error.column, Some(27));
        let error = Expression::compile("motor.tag == 'x'", "when").unwrap_err();
        assert!(error.message.contains("unknown variable `motor`"));
        assert_eq!((error.line, error.column), (Some(1), Some(1)));
    }

    #[test]
    fn the_extensions_functions_are_called_by_their_qualified_names() {
        // Before, `math` was refused as an unknown variable.
        let mut asset = motor(json!(75.5));
        asset.properties.insert("phases".into(), json!(-3));
        let context = AssetContext::new(&asset);
        for (source, expected) in [
            ("math.ceil(asset.properties.rated_power_kw)", json!(76.0)),
            (
                "math.floor(asset.properties.rated_power_kw / 10.0)",
                json!(7.0),
            ),
            ("math.round(asset.properties.rated_power_kw)", json!(76.0)),
            ("math.trunc(asset.properties.rated_power_kw)", json!(75.0)),
            ("math.abs(asset.properties.phases)", json!(3)),
            ("math.sign(asset.properties.phases)", json!(-1)),
            ("math.sqrt(16)", json!(4.0)),
            (
                "math.isFinite(asset.properties.rated_power_kw)",
                json!(true),
            ),
            ("math.isInf(1.0 / 0.0)", json!(true)),
            ("math.isNaN(0.0 / 0.0)", json!(true)),
            ("math.bitAnd(6, 3)", json!(2)),
            ("math.bitOr(6, 3)", json!(7)),
            ("math.bitXor(6, 3)", json!(5)),
            ("math.bitNot(0)", json!(-1)),
            ("math.bitShiftLeft(1, 4)", json!(16)),
            ("math.bitShiftRight(16, 4)", json!(1)),
            ("math.greatest(1, 5, 3)", json!(5)),
            ("lists.range(3)", json!([0, 1, 2])),
            ("strings.quote(asset.tag)", json!("\"M-101\"")),
        ] {
            let expression = Expression::compile(source, "value")
                .unwrap_or_else(|error| panic!("`{source}`: {error:?}"));
            assert_eq!(expression.evaluate(&context).unwrap(), expected, "{source}");
        }
        // Every qualified function the service lets through was run above.
        assert_eq!(QUALIFIED_FUNCTIONS.len(), 18);
        let error = Expression::compile("math.ceiling(1.5) > 1.0", "when").unwrap_err();
        assert!(
            error.message.starts_with("unknown function `math.ceiling`"),
            "{error:?}"
        );
    }

    #[test]
    fn comprehension_variables_are_in_scope() {
        let expression =
            Expression::compile("['A', 'B'].exists(x, x == asset.area)", "when").unwrap();
        assert!(!expression
            .is_true(&AssetContext::new(&motor(json!(1))))
            .unwrap());
    }

    #[test]
    fn matches_tests_a_regular_expression_as_a_member_or_a_function() {
        let motor = motor(json!(1));
        let asset = AssetContext::new(&motor);
        for (source, expected) in [
            ("asset.tag.matches('^M-[0-9]+$')", true),
            ("asset.tag.matches('^[FPLT]V-')", false),
            ("matches(asset.tag, '10')", true),
            ("asset.area.matches('^u100$')", false),
            ("asset.area.matches('(?i)^u100$')", true),
        ] {
            let expression = Expression::condition(source, "when").unwrap();
            // Twice: the second evaluation uses the pattern compiled by the first.
            for _ in 0..2 {
                assert_eq!(expression.is_true(&asset).unwrap(), expected, "{source}");
            }
        }
        let error = Expression::condition("asset.tag.matches('(M')", "when").unwrap_err();
        assert!(error.message.contains("not a valid regex"), "{error:?}");
        let error = Expression::condition("asset.tag.matches(1)", "when").unwrap_err();
        assert_eq!((error.line, error.column), (Some(1), Some(1)), "{error:?}");
    }

    #[test]
    fn string_functions_help_derive_tags() {
        let expression =
            Expression::compile("asset.tag.replace('M-', 'VFD-')", "then[0].tag").unwrap();
        assert_eq!(
            expression
                .evaluate(&AssetContext::new(&motor(json!(1))))
                .unwrap(),
            json!("VFD-101")
        );
        let expression = Expression::compile("asset.tag.substring(2)", "x").unwrap();
        assert_eq!(
            expression
                .evaluate(&AssetContext::new(&motor(json!(1))))
                .unwrap(),
            json!("101")
        );
    }

    #[test]
    fn a_property_value_without_a_faithful_json_form_is_refused() {
        let value = |source: &str| {
            Expression::compile(source, "then[0].value")
                .unwrap()
                .evaluate_property(&AssetContext::new(&motor(json!(1))))
        };
        // Before: 3600000000000 (nanoseconds) and "YWJj" (base64).
        for (source, refused) in [("duration('1h')", "a duration"), ("b'abc'", "bytes")] {
            let error = value(source).unwrap_err();
            assert!(
                error.0.starts_with(&format!("the value is {refused}")),
                "{error:?}"
            );
        }
        assert_eq!(
            value("timestamp('2024-05-01T10:00:00Z')").unwrap(),
            json!("2024-05-01T10:00:00+00:00")
        );
        assert_eq!(value("duration('1h').getSeconds()").unwrap(), json!(3600));
        assert_eq!(value("string(b'abc')").unwrap(), json!("abc"));
    }

    #[test]
    fn a_type_error_no_data_can_fix_is_refused_where_it_is() {
        let error = Expression::compile("asset.tag > 5", "when").unwrap_err();
        assert!(error.message.starts_with("type error"), "{error:?}");
        assert_eq!((error.line, error.column), (Some(1), Some(1)));
        let error = Expression::compile("asset.version > 1 && (asset.version + 'x') > 2", "when")
            .unwrap_err();
        assert_eq!((error.line, error.column), (Some(1), Some(23)), "{error:?}");
    }

    #[test]
    fn a_condition_that_gives_no_boolean_is_refused() {
        let error = Expression::condition("asset.tag", "when").unwrap_err();
        assert_eq!(error.field, "when");
        assert!(
            error.message.contains("must give true or false") && error.message.contains("string"),
            "{error:?}"
        );
        assert!(Expression::condition("asset.version + 1", "when").is_err());
        // A value expression may give anything; a condition that needs data may pass.
        assert!(Expression::compile("asset.tag", "then[0].value").is_ok());
        assert!(Expression::condition("asset.properties.voltage > 400", "when").is_ok());
    }

    #[test]
    fn a_type_error_behind_a_test_the_sample_fails_is_refused_with_its_position() {
        let error = Expression::compile(
            "asset.asset_type == 'ELECTRIC_MOTOR' && asset.tag > 5",
            "when",
        )
        .unwrap_err();
        assert!(error.message.starts_with("type error"), "{error:?}");
        assert_eq!((error.line, error.column), (Some(1), Some(41)));
        let error = Expression::compile(
            "asset.discipline == 'ELECTRICAL'\n  ? asset.version + 'x'\n  : 0",
            "then[0].value",
        )
        .unwrap_err();
        assert_eq!((error.line, error.column), (Some(2), Some(5)), "{error:?}");
        // Guards that keep a value error from running are fine, and so is a missing
        // property, and an operand inside a comprehension.
        for source in [
            "size(asset.tag) > 10 && asset.tag.substring(10) == 'X'",
            "asset.tag.startsWith('1') && int(asset.tag) > 100",
            "asset.asset_type == 'ELECTRIC_MOTOR' && asset.properties.rated_power_kw > 55",
            "['A', 'B'].exists(x, x == asset.area || x > 'C')",
            // Errors of the sample's values, not of types: a real asset may pass them.
            "asset.area.substring(0, 4) == 'U100'",
            "asset.name.split(' ')[1] == '101'",
            "100 / (asset.version - 1) > 1",
        ] {
            assert!(Expression::compile(source, "when").is_ok(), "{source}");
        }
    }

    #[test]
    fn a_missing_property_is_an_evaluation_error_not_a_definition_error() {
        let condition = Expression::compile("asset.properties.voltage > 400", "when").unwrap();
        let error = condition
            .is_true(&AssetContext::new(&motor(json!(1))))
            .unwrap_err();
        assert!(error.0.contains("voltage"), "{error:?}");
    }

    /// `asset.version + asset.version + ... > 0`: a chain of `terms - 1` additions,
    /// nesting one level per addition (arithmetic is not rebalanced).
    fn sum_of(terms: usize) -> String {
        vec!["asset.version"; terms].join(" + ") + " > 0"
    }

    #[test]
    fn deep_nesting_and_long_sources_are_refused_without_overflowing_a_stack() {
        // Parentheses up to the parser's limit compile: on a thread of their own, as
        // this test's thread has 2 MiB of stack, where 12 levels overflowed before.
        let nested = |depth: usize| "(".repeat(depth) + "asset.version > 1" + &")".repeat(depth);
        assert!(Expression::condition(&nested(90), "when").is_ok());
        let error = Expression::condition(&nested(500), "when").unwrap_err();
        assert!(
            error.message.starts_with("nested too deep to parse"),
            "{error:?}"
        );
        // A chain nests one level per operator: too deep to evaluate, refused.
        let error = Expression::condition(&sum_of(MAX_DEPTH + 1), "when").unwrap_err();
        assert_eq!(error.field, "when");
        assert!(
            error.message.starts_with("nested more than 64 levels deep"),
            "{error:?}"
        );
        assert_eq!(error.line, Some(1), "{error:?}");
        // The longest source the parser is given; a longer one is refused unparsed.
        let long = sum_of(250);
        assert!(long.len() <= MAX_SOURCE_BYTES && long.len() > MAX_SOURCE_BYTES / 2);
        assert!(Expression::condition(&long, "when")
            .unwrap_err()
            .message
            .starts_with("nested more than"));
        // The deepest sources that fit: two bytes per level.
        let additions = "1+".repeat(2_040) + "1 > 0";
        let selections = "asset.properties".to_owned() + &".a".repeat(2_030) + " > 0";
        for deepest in [additions, selections] {
            assert!(deepest.len() <= MAX_SOURCE_BYTES);
            let error = Expression::condition(&deepest, "when").unwrap_err();
            assert!(error.message.starts_with("nested more than"), "{error:?}");
        }
        let error = Expression::condition(&sum_of(1_000), "when").unwrap_err();
        assert!(
            error.message.starts_with("longer than 4096 bytes"),
            "{error:?}"
        );
    }

    #[test]
    fn the_deepest_expression_allowed_evaluates_on_a_thread_with_the_services_stack() {
        let deepest = (2..MAX_DEPTH + 1)
            .take_while(|terms| Expression::condition(&sum_of(*terms), "when").is_ok())
            .last()
            .unwrap();
        assert!(deepest > MAX_DEPTH - 5, "{deepest}");
        let expression = Expression::condition(&sum_of(deepest), "when").unwrap();
        let evaluated = std::thread::Builder::new()
            .stack_size(crate::THREAD_STACK)
            .spawn(move || expression.is_true(&AssetContext::new(&motor(json!(1)))))
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(evaluated, Ok(true));
    }
}

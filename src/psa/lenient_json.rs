//! JSON as PSA workflow templates really render it.
//!
//! Freshservice builds the webhook body by pasting placeholder values into a
//! hand-written template, so a delivery can be invalid JSON: an empty
//! placeholder leaves `"responder_id": ,`, a display name arrives unquoted
//! (`"status_id": Open`), and a subject containing `"` breaks its string.
//! Strict parsing is tried first; only when it fails does this parser read
//! the body leniently. No crate reads this dialect, hence the hand-written
//! parser; it is small and has its own tests.

use serde_json::{Map, Number, Value};

/// Where and why a body could not be read even leniently.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}: {message}")]
pub struct JsonError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Nesting deeper than this is refused rather than risking the stack.
const MAX_DEPTH: usize = 64;

/// Parses a body strictly if possible, else leniently.
pub fn parse(body: &[u8]) -> Result<Value, JsonError> {
    if let Ok(value) = serde_json::from_slice::<Value>(body) {
        return Ok(value);
    }
    let text = String::from_utf8_lossy(body);
    let mut parser = Parser {
        text: &text,
        pos: 0,
        depth: 0,
        string_budget: STRING_WORK_PER_BYTE * text.len() + 1024,
    };
    parser.skip_ws();
    if parser.at_end() {
        return Err(parser.error("the body is empty; send a JSON object"));
    }
    let value = parser.value(Context::ArrayItem)?;
    parser.skip_ws();
    if !parser.at_end() {
        return Err(parser.error("unexpected text after the end of the JSON value"));
    }
    Ok(value)
}

/// The two kinds of `,`-separated list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum List {
    Object,
    Array,
}

impl List {
    fn close(self) -> char {
        match self {
            List::Object => '}',
            List::Array => ']',
        }
    }
}

/// Where a string stands, which decides what may follow its closing quote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Context {
    Key,
    ObjectValue,
    ArrayItem,
}

/// Whether a `"` followed by `after` ends a string in `context`: a key's
/// quote is followed by `:`; an object value's by `}`, by `,` and then the
/// next key (`, "key":`) or the end of the object, or (a missing comma) by
/// the next key itself; an array item's by `,` or `]`.
fn closes(after: &str, context: Context) -> bool {
    let after = after.trim_start();
    match context {
        Context::Key => after.starts_with(':'),
        Context::ArrayItem => matches!(after.chars().next(), None | Some(',' | ']' | '}')),
        Context::ObjectValue => match after.chars().next() {
            None | Some('}') => true,
            Some(',') => {
                let next = after[1..].trim_start();
                next.is_empty() || next.starts_with('}') || starts_with_key(next)
            }
            Some('"') => starts_with_key(after),
            _ => false,
        },
    }
}

/// `"key":` or `key:` (a short run of key characters, then a colon).
fn starts_with_key(text: &str) -> bool {
    let (key, rest) = match text.strip_prefix('"') {
        Some(quoted) => match quoted.find(['"', '\n']) {
            Some(end) if quoted[end..].starts_with('"') => (&quoted[..end], &quoted[end + 1..]),
            _ => return false,
        },
        None => {
            let end = text
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '.'))
                .unwrap_or(text.len());
            (&text[..end], &text[end..])
        }
    };
    !key.is_empty() && key.len() <= 100 && rest.trim_start().starts_with(':')
}

/// Characters string reading may visit per byte of body. A string whose
/// raw quotes never close it properly is read to the end and then cut back
/// to its first plausible quote; many such strings would make reading
/// quadratic, so the work is capped and a body past it is refused (its
/// ticket id is still found by scanning).
const STRING_WORK_PER_BYTE: usize = 8;

struct Parser<'a> {
    text: &'a str,
    pos: usize,
    depth: usize,
    /// What string reading may still visit (see `STRING_WORK_PER_BYTE`).
    string_budget: usize,
}

impl Parser<'_> {
    fn rest(&self) -> &str {
        &self.text[self.pos..]
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn at_end(&self) -> bool {
        self.pos >= self.text.len()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn skip_ws(&mut self) {
        while let Some(c) = self.peek() {
            if c.is_whitespace() {
                self.pos += c.len_utf8();
            } else {
                break;
            }
        }
    }

    fn error(&self, message: &str) -> JsonError {
        let before = &self.text[..self.pos.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        JsonError {
            line,
            column,
            message: message.to_string(),
        }
    }

    fn value(&mut self, context: Context) -> Result<Value, JsonError> {
        self.skip_ws();
        match self.peek() {
            // An empty placeholder: `"group_id": ,` or `"group_id": }`.
            None | Some(',' | '}' | ']') => Ok(Value::Null),
            Some('{') => self.nested(Parser::object),
            Some('[') => self.nested(Parser::array),
            Some('"') => self.string(context).map(Value::String),
            Some(_) => Ok(self.bare_word()),
        }
    }

    fn nested(
        &mut self,
        parse: fn(&mut Self) -> Result<Value, JsonError>,
    ) -> Result<Value, JsonError> {
        if self.depth >= MAX_DEPTH {
            return Err(self.error("the JSON is nested too deeply"));
        }
        self.depth += 1;
        let value = parse(self);
        self.depth -= 1;
        value
    }

    fn object(&mut self) -> Result<Value, JsonError> {
        let mut map = Map::new();
        self.list(List::Object, |parser| {
            // A stray comma (trailing, or doubled) is skipped.
            if parser.peek() == Some(',') {
                parser.bump();
                return Ok(false);
            }
            let key = if parser.peek() == Some('"') {
                parser.string(Context::Key)?
            } else {
                parser.bare_key()?
            };
            parser.skip_ws();
            if parser.peek() != Some(':') {
                return Err(parser.error(&format!("expected ':' after the key \"{key}\"")));
            }
            parser.bump();
            let value = parser.value(Context::ObjectValue)?;
            map.insert(key, value);
            Ok(true)
        })?;
        Ok(Value::Object(map))
    }

    fn array(&mut self) -> Result<Value, JsonError> {
        let mut items = Vec::new();
        self.list(List::Array, |parser| {
            items.push(parser.value(Context::ArrayItem)?);
            Ok(true)
        })?;
        Ok(Value::Array(items))
    }

    /// Reads a list from its opening bracket to its closing one, `member`
    /// by `member`; one that returns true has read a member, which a
    /// separator must follow.
    fn list(
        &mut self,
        list: List,
        mut member: impl FnMut(&mut Self) -> Result<bool, JsonError>,
    ) -> Result<(), JsonError> {
        self.bump(); // '{' or '['
        loop {
            if self.closes(list)? {
                return Ok(());
            }
            if member(self)? {
                self.separator(list)?;
            }
        }
    }

    /// Skips white space; true (and past it) when `list` closes here.
    fn closes(&mut self, list: List) -> Result<bool, JsonError> {
        self.skip_ws();
        match self.peek() {
            Some(c) if c == list.close() => {
                self.bump();
                Ok(true)
            }
            None => Err(self.unclosed(list)),
            Some(_) => Ok(false),
        }
    }

    /// What follows a member or an item: a comma (stepped past) or the end
    /// of the list (left for `closes`). In an object, a missing comma
    /// between members is forgiven.
    fn separator(&mut self, list: List) -> Result<(), JsonError> {
        self.skip_ws();
        match self.peek() {
            Some(',') => {
                self.bump();
                Ok(())
            }
            Some(c) if c == list.close() => Ok(()),
            Some('"') if list == List::Object => Ok(()),
            None => Err(self.unclosed(list)),
            Some(c) => Err(self.error(&format!(
                "expected ',' or '{}' but found '{c}'",
                list.close()
            ))),
        }
    }

    fn unclosed(&self, list: List) -> JsonError {
        let name = match list {
            List::Object => "object",
            List::Array => "array",
        };
        self.error(&format!(
            "the {name} is not closed: '{}' is missing",
            list.close()
        ))
    }

    /// A quoted string. A raw `"` inside one (a subject such as `Printer
    /// "Bob" is down`, an HTML description's `<a href="…">`) is read as
    /// text: a `"` closes the string only where what follows shows the
    /// string is over (see `closes`). If no such quote comes, the first
    /// one that could end a JSON string closes it after all, else the first. Raw control
    /// characters are kept; an unknown escape keeps its backslash.
    fn string(&mut self, context: Context) -> Result<String, JsonError> {
        let start = self.pos;
        self.bump(); // '"'
        let mut out = String::new();
        let mut fallback: Option<(usize, usize)> = None;
        let mut first: Option<(usize, usize)> = None;
        loop {
            if self.string_budget == 0 {
                return Err(
                    self.error("the body is too damaged to read (too many unclosed strings)")
                );
            }
            self.string_budget -= 1;
            let Some(c) = self.bump() else {
                if let Some((pos, len)) = fallback.or(first) {
                    self.pos = pos;
                    out.truncate(len);
                    return Ok(out);
                }
                self.pos = start;
                return Err(self.error("the string starting here is not closed"));
            };
            match c {
                '"' => {
                    let after = self.rest();
                    if closes(after, context) {
                        return Ok(out);
                    }
                    let loose = after.trim_start_matches([' ', '\t', '\r', '\n']);
                    if fallback.is_none()
                        && matches!(loose.chars().next(), None | Some(',' | '}' | ']' | ':'))
                    {
                        fallback = Some((self.pos, out.len()));
                    }
                    first.get_or_insert((self.pos, out.len()));
                    out.push('"');
                }
                '\\' => self.escape(&mut out),
                c => out.push(c),
            }
        }
    }

    fn escape(&mut self, out: &mut String) {
        let simple = match self.peek() {
            Some('"') => Some('"'),
            Some('\\') => Some('\\'),
            Some('/') => Some('/'),
            Some('b') => Some('\u{8}'),
            Some('f') => Some('\u{c}'),
            Some('n') => Some('\n'),
            Some('r') => Some('\r'),
            Some('t') => Some('\t'),
            _ => None,
        };
        if let Some(c) = simple {
            self.bump();
            out.push(c);
            return;
        }
        if self.peek() == Some('u') {
            if let Some(c) = self.unicode_escape() {
                out.push(c);
                return;
            }
        }
        out.push('\\');
    }

    /// `\uXXXX`, with surrogate pairs; `None` (consuming nothing) if malformed.
    fn unicode_escape(&mut self) -> Option<char> {
        let hex = |s: &str| s.get(1..5).and_then(|h| u32::from_str_radix(h, 16).ok());
        let first = hex(self.rest())?;
        if (0xD800..0xDC00).contains(&first) {
            let after = self.rest().get(5..)?;
            let second = after.strip_prefix('\\').and_then(hex)?;
            if !(0xDC00..0xE000).contains(&second) {
                return None;
            }
            let c = char::from_u32(0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00))?;
            self.pos += 11;
            return Some(c);
        }
        let c = char::from_u32(first)?;
        self.pos += 5;
        Some(c)
    }

    /// An unquoted value up to `,` `}` `]` or the end of the line: a number,
    /// `true`/`false`/`null`, or text such as `Open` or `INC-123`.
    fn bare_word(&mut self) -> Value {
        let start = self.pos;
        let rest = self.rest();
        let end = rest.find([',', '}', ']', '\n']).unwrap_or(rest.len());
        self.pos += end;
        let word = self.text[start..start + end].trim();
        match word {
            "" => Value::Null,
            "null" => Value::Null,
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => serde_json::from_str::<Number>(word)
                .map(Value::Number)
                .unwrap_or_else(|_| Value::String(word.to_string())),
        }
    }

    fn bare_key(&mut self) -> Result<String, JsonError> {
        let rest = self.rest();
        let end = rest.find([':', ',', '}', '\n']).unwrap_or(rest.len());
        let key = rest[..end].trim().to_string();
        if key.is_empty() || !rest[end..].starts_with(':') {
            return Err(self.error("expected a quoted key such as \"ticket_id\""));
        }
        self.pos += end;
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn lenient(text: &str) -> Value {
        parse(text.as_bytes()).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn strict_json_is_unchanged() {
        assert_eq!(
            lenient(r#"{"a": [1, 2.5, "x"], "b": null}"#),
            json!({"a": [1, 2.5, "x"], "b": null})
        );
    }

    #[test]
    fn empty_placeholders_read_as_null() {
        let value = lenient("{\"ticket_id\": 5, \"responder_id\": , \"group_id\": }");
        assert_eq!(
            value,
            json!({"ticket_id": 5, "responder_id": null, "group_id": null})
        );
        let value = lenient("{\n  \"ticket_id\": 5,\n  \"department_id\": \n}");
        assert_eq!(value, json!({"ticket_id": 5, "department_id": null}));
    }

    #[test]
    fn bare_words_become_strings_or_numbers() {
        let value = lenient(
            r#"{"status_id": Open, "priority_id": 3, "id": INC-123, "flag": true, "when": 2024-01-15 10:30:00}"#,
        );
        assert_eq!(
            value,
            json!({"status_id": "Open", "priority_id": 3, "id": "INC-123", "flag": true, "when": "2024-01-15 10:30:00"})
        );
    }

    #[test]
    fn quotes_inside_strings_survive() {
        let value = lenient(r#"{"subject": "Printer "Bob" is down", "ticket_id": 1}"#);
        assert_eq!(value["subject"], "Printer \"Bob\" is down");
    }

    #[test]
    fn html_with_raw_quotes_is_read_up_to_the_next_key() {
        let body = r#"{"ticket_id": 7, "description": "<p class="note">Hi "Bob", see <a href="https://x/y">this</a></p>", "status_id": 2}"#;
        let value = lenient(body);
        assert_eq!(
            value["description"],
            r#"<p class="note">Hi "Bob", see <a href="https://x/y">this</a></p>"#
        );
        assert_eq!(value["status_id"], 2);
        // Last in the object, and with a missing comma after it.
        let value = lenient("{\"d\": \"<b style=\"x\">a</b>\"}");
        assert_eq!(value["d"], "<b style=\"x\">a</b>");
        let value = lenient("{\"d\": \"say \"hi\", ok\"\n\"n\": 1}");
        assert_eq!(value, json!({"d": "say \"hi\", ok", "n": 1}));
        // Arrays keep the plain rule.
        assert_eq!(lenient(r#"{"a": ["x", "y"],}"#), json!({"a": ["x", "y"]}));
    }

    #[test]
    fn raw_newlines_and_bad_escapes_are_kept() {
        let value = lenient("{\"subject\": \"line one\nline two C:\\Users\", \"x\": \"\\u00e9\"}");
        assert_eq!(value["subject"], "line one\nline two C:\\Users");
        assert_eq!(value["x"], "é");
    }

    #[test]
    fn trailing_and_missing_commas_are_forgiven() {
        assert_eq!(lenient(r#"{"a": 1,}"#), json!({"a": 1}));
        assert_eq!(lenient("{\"a\": 1\n\"b\": 2}"), json!({"a": 1, "b": 2}));
    }

    #[test]
    fn errors_say_where() {
        let error = parse(b"{\n  \"ticket_id\" 5\n}").unwrap_err();
        assert_eq!((error.line, error.column), (2, 15));
        assert!(error.message.contains("expected ':'"), "{error}");
        let error = parse(b"{\"a\": 1").unwrap_err();
        assert!(error.message.contains("not closed"), "{error}");
        let error = parse(b"   ").unwrap_err();
        assert!(error.message.contains("empty"), "{error}");
        let error = parse(b"{\"a\": 1} trailing").unwrap_err();
        assert!(error.message.contains("after the end"), "{error}");
    }

    #[test]
    fn unclosable_strings_cost_linear_time() {
        // No value's quote is followed by a key (`a b:` is not one) nor by
        // the end of the object, so each string is read to the end of the
        // body and cut back to its first plausible quote: quadratic work,
        // which the budget refuses.
        let body = |n: usize| format!("{{\"k\": \"v\"{} x}}", ", a b: \"v\"".repeat(n));
        let error = parse(body(2_000).as_bytes()).unwrap_err();
        assert!(error.message.contains("too damaged"), "{error}");
        // A few such strings are read as usual, up to the stray word.
        let error = parse(body(3).as_bytes()).unwrap_err();
        assert!(error.message.contains("found 'x'"), "{error}");
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let body = "[".repeat(10_000);
        let error = parse(body.as_bytes()).unwrap_err();
        assert!(error.message.contains("nested too deeply"), "{error}");
    }
}

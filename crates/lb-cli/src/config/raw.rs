//! A configuration file's values as written, before a setting's parser sees them: a
//! [`Scalar`], a list of tables ([`Tables`], each read by its [`Table`]), and the keys of a
//! table ([`read_key`]). Each is read from any TOML value, so that one of the wrong kind is
//! reported in the file's words (`backend: expected [[backend]] tables ..., found the string
//! "x"`), never serde's, which would name Rust types.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use toml::Spanned;

use super::{BadValue, THE_TABLE};

/// A value read from the file, with the byte offset it was written at (for messages).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct At<T> {
    pub(crate) value: T,
    pub(crate) at: usize,
}

/// Reads a key as serde's derive reads a field name, so that a message about it (an unknown
/// key, a key out of place) is reported at the key. `known` says which key it is, or what is
/// wrong with it.
pub(crate) fn read_key<'de, D: Deserializer<'de>, K>(
    d: D,
    known: impl FnOnce(&str) -> Result<K, String>,
) -> Result<K, D::Error> {
    struct Name<F>(F);
    impl<'de, K, F: FnOnce(&str) -> Result<K, String>> Visitor<'de> for Name<F> {
        type Value = K;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a key")
        }
        fn visit_str<E: de::Error>(self, key: &str) -> Result<K, E> {
            (self.0)(key).map_err(E::custom)
        }
    }
    d.deserialize_identifier(Name(known))
}

/// The message about a key a table does not take: `pool: unknown key `x`, expected one of ...`
/// (`table` is `pool: ` there, empty at the top level).
pub(crate) fn unknown_key(table: &str, key: &str, known: &[&str]) -> String {
    let known: Vec<String> = known.iter().map(|k| format!("`{k}`")).collect();
    format!("{table}unknown key `{key}`, expected one of {}", known.join(", "))
}

/// A table of a list of tables (`[[backend]]`, `[[pool]]`, `[[listen]]`, a listener's
/// routes): how the list is written, for messages, and how one table is read.
pub(crate) trait Table: Sized {
    /// The key the list is written under, as messages name it.
    const KEY: &'static str;
    /// What the list should be, for messages: `expected [[backend]] tables with ...`.
    const FORM: &'static str;
    /// How one table is written: `[[backend]]`.
    const HEADER: &'static str;
    /// Reads one table: a TOML error, or the table or a value in it that is not right (kept
    /// until the whole file is read, as for the settings).
    fn read<'de, A: MapAccess<'de>>(map: A) -> Result<Result<Self, BadValue>, A::Error>;
}

/// Visitor methods that turn down every value but the one the visitor is for, with a message in
/// the file's words (`backend: expected ..., found a string "x"`) rather than serde's, which
/// would name Rust types.
macro_rules! refuse_other_values {
    ($expected:expr) => {
        refuse_other_values!(@but_text $expected);
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Err(E::custom(format!("{}, found the string {v:?}", $expected)))
        }
    };
    // For a visitor that takes text: every other value that is not a list or a table.
    (@but_text $expected:expr) => {
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
            Err(E::custom(format!("{}, found {v}", $expected)))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Err(E::custom(format!("{}, found the number {v}", $expected)))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Err(E::custom(format!("{}, found the number {v}", $expected)))
        }
        fn visit_i128<E: de::Error>(self, v: i128) -> Result<Self::Value, E> {
            Err(E::custom(format!("{}, found the number {v}", $expected)))
        }
        fn visit_u128<E: de::Error>(self, v: u128) -> Result<Self::Value, E> {
            Err(E::custom(format!("{}, found the number {v}", $expected)))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            Err(E::custom(format!("{}, found the number {v:?}", $expected)))
        }
    };
}

/// A key whose value is a list of tables. A custom visitor so that a plain string, a single
/// `[backend]` table or a list of strings (easy mistakes) is reported with the key's name and
/// the expected form.
#[derive(Debug)]
pub(crate) struct Tables<T> {
    items: Vec<At<T>>,
    /// The first table that is not right.
    first_bad: Option<BadValue>,
}

impl<T> Default for Tables<T> {
    fn default() -> Self {
        Tables { items: Vec::new(), first_bad: None }
    }
}

impl<T> Tables<T> {
    /// The tables, each with where it starts, or the first that is not right.
    pub(crate) fn checked(self) -> Result<Vec<At<T>>, BadValue> {
        self.first_bad.map_or(Ok(self.items), Err)
    }
}

impl<'de, T: Table> Deserialize<'de> for Tables<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Tables<T>, D::Error> {
        struct List<T>(PhantomData<T>);
        impl<'de, T: Table> Visitor<'de> for List<T> {
            type Value = Tables<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}: {}", T::KEY, T::FORM)
            }
            refuse_other_values!(format_args!("{}: {}", T::KEY, T::FORM));
            fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
                Err(de::Error::custom(format!(
                    "{}: {}, found a single [{}] table (write {})",
                    T::KEY,
                    T::FORM,
                    T::KEY,
                    T::HEADER
                )))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut tables = Tables::default();
                while let Some(entry) = seq.next_element::<Spanned<Entry<T>>>()? {
                    let at = entry.span().start;
                    match entry.into_inner().0 {
                        Ok(value) => tables.items.push(At { value, at }),
                        Err(mut bad) => {
                            if bad.at == THE_TABLE {
                                bad.at = at;
                            }
                            tables.first_bad.get_or_insert(bad);
                        }
                    }
                }
                Ok(tables)
            }
        }
        d.deserialize_any(List(PhantomData))
    }
}

/// One element of a list of tables: a table, read by [`Table::read`]; anything else (a
/// string, a number, an array) is turned down in the file's words.
struct Entry<T>(Result<T, BadValue>);

impl<'de, T: Table> Deserialize<'de> for Entry<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Entry<T>, D::Error> {
        struct One<T>(PhantomData<T>);
        impl<'de, T: Table> Visitor<'de> for One<T> {
            type Value = Entry<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}: {}", T::KEY, T::FORM)
            }
            refuse_other_values!(format_args!("{}: {}", T::KEY, T::FORM));
            fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
                Err(de::Error::custom(format!("{}: {}, found an array", T::KEY, T::FORM)))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                T::read(map).map(Entry)
            }
        }
        d.deserialize_any(One(PhantomData))
    }
}

/// A value as written, before its flag's parser sees it. Any TOML value is accepted here, so
/// that a value of the wrong kind is reported by [`Scalar::text`] together with its key.
#[derive(Debug)]
pub(crate) enum Scalar {
    /// A string, or a number kept as its text (`8080`, `1.5`).
    Text(String),
    Bool(bool),
    /// An array, a table or a date: never a valid setting. The name is for the error.
    Other(&'static str),
}

impl Scalar {
    /// The text a flag's parser reads: the command line's form of this value.
    pub(crate) fn text(&self) -> Result<String, String> {
        match self {
            Scalar::Text(s) => Ok(s.clone()),
            Scalar::Bool(b) => Ok(b.to_string()),
            Scalar::Other(kind) => Err(format!("expected a string or a number, found {kind}")),
        }
    }

    pub(crate) fn kind(&self) -> String {
        match self {
            Scalar::Text(s) => format!("{s:?}"),
            Scalar::Bool(b) => b.to_string(),
            Scalar::Other(kind) => (*kind).to_owned(),
        }
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Scalar, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, a number or true/false")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar::Bool(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar::Text(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar::Text(v.to_string()))
            }
            // Integers beyond 64 bits (`port = 99999999999999999999999`): kept as text too, so
            // the flag's parser says the number is out of its range, naming the key.
            fn visit_i128<E: de::Error>(self, v: i128) -> Result<Scalar, E> {
                Ok(Scalar::Text(v.to_string()))
            }
            fn visit_u128<E: de::Error>(self, v: u128) -> Result<Scalar, E> {
                Ok(Scalar::Text(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
                // Debug keeps the point (`2.0`), so a float never passes for a whole number.
                Ok(Scalar::Text(format!("{v:?}")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar::Text(v.to_owned()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Scalar::Other("an array"))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scalar, A::Error> {
                // toml hands dates over as a map with one private key.
                let mut kind = "a table";
                if let Some(key) = map.next_key::<String>()? {
                    if key.starts_with("$__toml_private") {
                        kind = "a date";
                    }
                    map.next_value::<IgnoredAny>()?;
                }
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Scalar::Other(kind))
            }
        }
        d.deserialize_any(V)
    }
}

/// How a [`Strings`] value is written, for the message about a value of another kind.
pub(crate) trait ListForm {
    /// `expected a list of ... such as [...]`, after the key as the message names it.
    const FORM: &'static str;
}

/// A key whose value is a list of strings, or one string alone (`sni = "a.example"`, `deny =
/// "10.0.0.0/8"`); anything else is turned down in the file's words (`F::FORM`).
pub(crate) struct Strings<F> {
    value: OneOrMany,
    form: PhantomData<F>,
}

enum OneOrMany {
    One(String),
    Many(Vec<Spanned<Scalar>>),
}

impl<F> Strings<F> {
    /// Each string with where it is written (one alone: where the value is).
    pub(crate) fn items(strings: Spanned<Strings<F>>) -> Vec<Spanned<Scalar>> {
        let span = strings.span();
        match strings.into_inner().value {
            OneOrMany::One(text) => vec![Spanned::new(span, Scalar::Text(text))],
            OneOrMany::Many(items) => items,
        }
    }

    fn new(value: OneOrMany) -> Strings<F> {
        Strings { value, form: PhantomData }
    }
}

impl<'de, F: ListForm> Deserialize<'de> for Strings<F> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Strings<F>, D::Error> {
        struct V<F>(PhantomData<F>);
        impl<'de, F: ListForm> Visitor<'de> for V<F> {
            type Value = Strings<F>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(F::FORM)
            }
            refuse_other_values!(@but_text F::FORM);
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Strings<F>, E> {
                Ok(Strings::new(OneOrMany::One(v.to_owned())))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Strings<F>, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Strings::new(OneOrMany::Many(items)))
            }
            fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<Strings<F>, A::Error> {
                Err(de::Error::custom(format!("{}, found a table", F::FORM)))
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

//! Serde for the `"type"`-tagged unions of the Messages API (content blocks, deltas, stream
//! events) that keeps unknown variants: a tag Volley does not know is read as the variant
//! `Other(serde_json::Value)` and written back unchanged.
//!
//! serde's derived internally tagged enums cannot do that (`#[serde(other)]` takes unit
//! variants only), so [`tagged_union!`] writes the two impls: read the object, take its
//! `type` out, and read the rest as the named variant's struct (whose `extra` map keeps the
//! fields it does not name).

/// Writes a `"type"`-tagged enum with one newtype variant per known tag and an
/// `Other(serde_json::Value)` variant for the rest, with its `Serialize` and `Deserialize`.
macro_rules! tagged_union {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $tag:literal => $variant:ident($ty:ty), )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq)]
        #[non_exhaustive]
        pub enum $name {
            $( $(#[$vmeta])* $variant($ty), )+
            /// A type this version of Volley does not know, kept verbatim (its `type`
            /// included).
            Other(serde_json::Value),
        }

        impl $name {
            /// The `type` tag of this value (`""` for an `Other` without a string tag).
            pub fn type_name(&self) -> &str {
                match self {
                    $( $name::$variant(_) => $tag, )+
                    $name::Other(value) => value
                        .get("type")
                        .and_then(serde_json::Value::as_str)
                        .unwrap_or(""),
                }
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                match self {
                    $( $name::$variant(inner) => {
                        $crate::anthropic::tagged::Tagged { r#type: $tag, inner }
                            .serialize(serializer)
                    } )+
                    $name::Other(value) => value.serialize(serializer),
                }
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                use serde::de::Error as _;
                let value = serde_json::Value::deserialize(deserializer)?;
                let serde_json::Value::Object(mut map) = value else {
                    return Err(D::Error::custom(concat!(
                        "expected a JSON object for ", stringify!($name)
                    )));
                };
                let tag = match map.get("type") {
                    Some(serde_json::Value::String(tag)) => tag.as_str(),
                    _ => "",
                };
                match tag {
                    $( $tag => {
                        map.remove("type");
                        serde_json::from_value(serde_json::Value::Object(map))
                            .map($name::$variant)
                            .map_err(D::Error::custom)
                    } )+
                    _ => Ok($name::Other(serde_json::Value::Object(map))),
                }
            }
        }
    };
}

pub(crate) use tagged_union;

/// A struct written with a `type` field in front.
#[derive(serde::Serialize)]
pub(crate) struct Tagged<'a, T> {
    pub(crate) r#type: &'static str,
    #[serde(flatten)]
    pub(crate) inner: &'a T,
}

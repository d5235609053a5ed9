//! `#[derive(Config)]`: a node kind's settings declared once, as a struct.
//!
//! Each field is a setting: its name (the field's, or its `#[serde(rename)]`),
//! its type (from the field's Rust type through `kiln_engine::Setting`), its
//! doc (the field's `///` lines) and its default. `#[setting(...)]` adds what
//! the Rust type cannot say:
//!
//! - `default = <json>`: the value a left-out setting takes (`[64]`, `"relu"`, `0.5`);
//! - `min = x`, `max = x` (inclusive), `gt = x`, `lt = x` (exclusive): bounds of
//!   a number, or of each number of a list;
//! - `ty = <expr>`: the whole `SettingType`, for shapes the Rust type cannot name.
//!
//! A field of type `Option<T>` without a default may be left out; any other
//! field without a default must be given.

use proc_macro::TokenStream;
use proc_macro2::TokenStream as Tokens;
use quote::quote;
use syn::{parse_macro_input, Data, DeriveInput, Expr, Fields, LitStr, Type};

/// Derives `kiln_engine::Config` for a struct of named fields.
#[proc_macro_derive(Config, attributes(setting))]
pub fn derive_config(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    match expand(&input) {
        Ok(tokens) => tokens.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

fn expand(input: &DeriveInput) -> syn::Result<Tokens> {
    let Data::Struct(data) = &input.data else {
        return Err(syn::Error::new_spanned(input, "Config: expected a struct"));
    };
    let Fields::Named(fields) = &data.fields else {
        return Err(syn::Error::new_spanned(
            input,
            "Config: expected a struct with named fields",
        ));
    };
    let specs = fields
        .named
        .iter()
        .map(field_spec)
        .collect::<syn::Result<Vec<_>>>()?;
    let name = &input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    Ok(quote! {
        impl #impl_generics ::kiln_engine::Config for #name #ty_generics #where_clause {
            fn specs() -> ::std::vec::Vec<::kiln_engine::SettingSpec> {
                ::std::vec![#(#specs),*]
            }
        }
    })
}

/// What `#[setting(...)]` says about one field.
#[derive(Default)]
struct Attrs {
    default: Option<Expr>,
    ty: Option<Expr>,
    bounds: Vec<(&'static str, Expr)>,
}

fn field_spec(field: &syn::Field) -> syn::Result<Tokens> {
    let ident = field.ident.as_ref().expect("named field");
    let name = serde_rename(field)?.unwrap_or_else(|| {
        let s = ident.to_string();
        s.strip_prefix("r#").map(String::from).unwrap_or(s)
    });
    let doc = doc_of(field);
    if doc.is_empty() {
        return Err(syn::Error::new_spanned(
            ident,
            "Config: every setting needs a `///` doc line (`kiln nodes` shows it)",
        ));
    }
    let attrs = setting_attrs(field)?;
    let field_ty = &field.ty;
    let mut ty = match &attrs.ty {
        Some(expr) => quote!(#expr),
        None => quote!(<#field_ty as ::kiln_engine::Setting>::setting_type()),
    };
    for (method, value) in &attrs.bounds {
        let method = syn::Ident::new(method, proc_macro2::Span::call_site());
        ty = quote!(#ty.#method((#value) as f64));
    }
    let default = match (&attrs.default, is_option(field_ty)) {
        (Some(value), _) => quote! {
            ::kiln_engine::SettingDefault::Value(::kiln_engine::__private::json!(#value))
        },
        (None, true) => quote!(::kiln_engine::SettingDefault::Optional),
        (None, false) => quote!(::kiln_engine::SettingDefault::Required),
    };
    Ok(quote! {
        ::kiln_engine::SettingSpec { name: #name, ty: #ty, default: #default, doc: #doc }
    })
}

fn setting_attrs(field: &syn::Field) -> syn::Result<Attrs> {
    let mut attrs = Attrs::default();
    for attr in field.attrs.iter().filter(|a| a.path().is_ident("setting")) {
        attr.parse_nested_meta(|meta| {
            let key = meta
                .path
                .get_ident()
                .map(ToString::to_string)
                .unwrap_or_default();
            let bound = match key.as_str() {
                "default" => {
                    attrs.default = Some(meta.value()?.parse()?);
                    return Ok(());
                }
                "ty" => {
                    attrs.ty = Some(meta.value()?.parse()?);
                    return Ok(());
                }
                "min" => "at_least",
                "max" => "at_most",
                "gt" => "above",
                "lt" => "below",
                _ => {
                    return Err(
                        meta.error("Config: expected `default`, `ty`, `min`, `max`, `gt` or `lt`")
                    )
                }
            };
            attrs.bounds.push((bound, meta.value()?.parse()?));
            Ok(())
        })?;
    }
    Ok(attrs)
}

/// The field's `#[serde(rename = "...")]`, if any.
fn serde_rename(field: &syn::Field) -> syn::Result<Option<String>> {
    let mut rename = None;
    for attr in field.attrs.iter().filter(|a| a.path().is_ident("serde")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("rename") {
                rename = Some(meta.value()?.parse::<LitStr>()?.value());
            } else if meta.input.peek(syn::Token![=]) {
                meta.value()?.parse::<Expr>()?;
            }
            Ok(())
        })?;
    }
    Ok(rename)
}

/// The field's `///` lines, trimmed and joined by spaces.
fn doc_of(field: &syn::Field) -> String {
    field
        .attrs
        .iter()
        .filter(|a| a.path().is_ident("doc"))
        .filter_map(|a| match &a.meta {
            syn::Meta::NameValue(nv) => match &nv.value {
                Expr::Lit(syn::ExprLit {
                    lit: syn::Lit::Str(s),
                    ..
                }) => Some(s.value().trim().to_string()),
                _ => None,
            },
            _ => None,
        })
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn is_option(ty: &Type) -> bool {
    matches!(ty, Type::Path(p) if p.qself.is_none()
        && p.path.segments.last().is_some_and(|s| s.ident == "Option"))
}

//! Golden text of rendered reports (colour off): what a user reads, pinned.

use std::path::Path;

use traj::diag::SourceMap;
use traj::sema::Options;
use traj::sema::check::check_source;

fn rendered(fixture: &str) -> String {
    let rel = format!("tests/fixtures/err/{fixture}.traj");
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(&rel);
    let text = std::fs::read_to_string(&path).expect("fixture");
    let mut sources = SourceMap::default();
    let diags = check_source(&rel, Some(path), &text, &Options::default(), &mut sources)
        .expect_err("the fixture has errors");
    diags.iter().map(|d| d.render(&sources, false)).collect()
}

#[test]
fn broadcast_mismatch_names_both_shapes() {
    insta::assert_snapshot!(rendered("shape_broadcast"));
}

#[test]
fn float_shape_hints_floor_division() {
    insta::assert_snapshot!(rendered("type_float_shape"));
}

#[test]
fn duplicate_shows_both_definitions() {
    insta::assert_snapshot!(rendered("name_duplicate"));
}

#[test]
fn syntax_error_says_what_was_expected() {
    insta::assert_snapshot!(rendered("syntax_two_errors"));
}

#[test]
fn observable_through_a_let_points_inside_it() {
    insta::assert_snapshot!(rendered("kind_observable_via_let"));
}

#[test]
fn a_second_file_header_names_its_true_position() {
    insta::assert_snapshot!(rendered("name_duplicate_unicode_module"));
}

#[test]
fn an_unclosed_brace_points_at_where_it_opens() {
    insta::assert_snapshot!(rendered("syntax_unclosed_train"));
}

#[test]
fn an_unclosed_bracket_is_labelled_where_the_error_is_found() {
    insta::assert_snapshot!(rendered("syntax_unclosed_bracket_before_item"));
}

#[test]
fn a_standard_library_name_hints_its_use() {
    insta::assert_snapshot!(rendered("name_std_hint"));
}

#[test]
fn a_float_literal_too_large_is_an_error() {
    insta::assert_snapshot!(rendered("syntax_float_too_large"));
}

#[test]
fn a_seed_that_is_not_an_int_says_what_seeds_are() {
    insta::assert_snapshot!(rendered("type_seed_float_in_sweep"));
}

//! What a user should hear of merges: changes left out for tables or columns this database
//! lacks, which of those it still waits for, and tables that refused changes; and what a peer
//! said it did not take of this database's changes.

use pluresdb_core::{Error, ErrorKind, Refetch, Refused};

/// Names listed in a note before "and N more".
const NAMES_SHOWN: usize = 8;

/// The first [`NAMES_SHOWN`] of `list`, then "and N more".
fn first_names(list: &[Refetch]) -> String {
    let mut names = (list.iter().take(NAMES_SHOWN))
        .map(Refetch::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    if list.len() > NAMES_SHOWN {
        names += &format!(" and {} more", list.len() - NAMES_SHOWN);
    }
    names
}

/// The sentence to tell of merges that left `skipped` changes out (of the tables and columns
/// `left_out`), if any were.
pub fn left_out_note(skipped: u64, left_out: &[Refetch]) -> Option<String> {
    if skipped == 0 {
        return None;
    }
    let names = first_names(left_out);
    let (changes, are, them) = if skipped == 1 {
        ("change", "is", "it")
    } else {
        ("changes", "are", "them")
    };
    let names = if names.is_empty() {
        names
    } else {
        format!(" ({names})")
    };
    Some(format!(
        "{skipped} {changes} {are} for tables or columns this database does not sync or \
         have{names}; once it does, the next sync asks for {them} again"
    ))
}

/// The sentence telling which tables and columns (`waiting`, all named) had changes left out
/// and are still not here, if any.
pub fn waiting_note(waiting: &[Refetch]) -> Option<String> {
    if waiting.is_empty() {
        return None;
    }
    let names: Vec<String> = waiting.iter().map(Refetch::to_string).collect();
    Some(format!(
        "changes of {}, which this database does not sync or have; once it does, the next \
         sync asks for them again",
        names.join(", ")
    ))
}

/// Each refused table with why, one after the other.
fn each_refused(refused: &[Refused]) -> String {
    let tables: Vec<String> = refused.iter().map(Refused::to_string).collect();
    tables.join("; ")
}

/// The error telling which tables refused the peer's changes (`refused`), if any: what was
/// wrong with each, and that the rest merged and the next sync brings them again.
pub fn refused_error(refused: &[Refused]) -> Option<Error> {
    if refused.is_empty() {
        return None;
    }
    Some(Error::new(
        ErrorKind::Constraint,
        format!(
            "changes were refused (the rest merged): {}. The peer's cursor was not recorded, so \
             the next sync brings them again",
            each_refused(refused)
        ),
    ))
}

/// The error telling which tables of this database's changes the peer refused (`refused`,
/// what it said), if any.
pub fn peer_refused_error(refused: &[Refused]) -> Option<Error> {
    if refused.is_empty() {
        return None;
    }
    Some(Error::new(
        ErrorKind::Constraint,
        format!(
            "the peer refused this database's changes of {} (the rest merged there). They stay \
             here, and every sync sends them again until the peer takes them",
            each_refused(refused)
        ),
    ))
}

/// The sentence telling which tables and columns the peer said it does not sync, so it left
/// this database's changes of them out (`left_out`), if any.
pub fn peer_left_out_note(left_out: &[Refetch]) -> Option<String> {
    if left_out.is_empty() {
        return None;
    }
    let names = first_names(left_out);
    Some(format!(
        "the peer does not sync {names} (or lacks those columns), so it left this database's \
         changes of them out: they do not reach the devices that sync only with it. Once it \
         syncs them it asks for them again"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_note_names_what_was_left_out() {
        assert!(left_out_note(0, &[]).is_none());
        let names: Vec<Refetch> = (0..10)
            .map(|i| Refetch {
                table: format!("t{i}"),
                column: (i % 2 == 1).then(|| "c".to_owned()),
            })
            .collect();
        let note = left_out_note(12, &names).unwrap();
        assert!(
            note.starts_with("12 changes are") && note.contains("(t0, t1.c, t2,"),
            "{note}"
        );
        assert!(note.contains("t7.c and 2 more)"), "{note}");
        let one = left_out_note(1, &names[..1]).unwrap();
        assert!(
            one.starts_with("1 change is") && one.contains("(t0)"),
            "{one}"
        );
        assert!(one.ends_with("asks for it again"), "{one}");
        assert!(waiting_note(&[]).is_none());
        let waiting = waiting_note(&names).unwrap();
        assert!(waiting.starts_with("changes of t0, t1.c, ") && waiting.contains("t9.c, which"));
    }
}

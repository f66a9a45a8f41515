//! What a user should hear of merges: changes left out for tables or columns this database
//! lacks.

use pluresdb_core::Refetch;

/// Names listed in a note before "and N more".
const NAMES_SHOWN: usize = 8;

/// One sentence per thing worth telling of merges that left `skipped` changes out (of the
/// tables and columns `left_out`); none when nothing was.
pub fn merge_notes(skipped: u64, left_out: &[Refetch]) -> Vec<String> {
    let mut notes = Vec::new();
    if skipped > 0 {
        let mut names = (left_out.iter().take(NAMES_SHOWN))
            .map(Refetch::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        if left_out.len() > NAMES_SHOWN {
            names += &format!(" and {} more", left_out.len() - NAMES_SHOWN);
        }
        notes.push(format!(
            "{skipped} changes are for tables or columns this database does not sync or have \
             ({names}); once it does, the next sync asks for them again"
        ));
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_name_what_was_left_out() {
        assert!(merge_notes(0, &[]).is_empty());
        let names: Vec<Refetch> = (0..10)
            .map(|i| Refetch {
                table: format!("t{i}"),
                column: (i % 2 == 1).then(|| "c".to_owned()),
            })
            .collect();
        let notes = merge_notes(12, &names);
        assert_eq!(notes.len(), 1);
        assert!(
            notes[0].starts_with("12 changes") && notes[0].contains("(t0, t1.c, t2,"),
            "{notes:?}"
        );
        assert!(notes[0].contains("t7.c and 2 more)"), "{notes:?}");
    }
}

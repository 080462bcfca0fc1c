package AfterBlock;

# A block's own Perl, run after its last response: t/016's --- attack,
# t/017's --- after and t/018's --- scenario, one hook instead of a copy in
# each file. The test file hands over a closure that does the eval, so the
# code sees that file's variables and subs ($Slow, its helpers), not this
# module's. Runs through the documented add_response_body_check hook, so it
# works the same under the real Test::Nginx and the project's fallback
# runner.
#
#   AfterBlock::install(attack => \$Name, sub { eval $_[0] });
#
# On every block's last response (none in a dry run) it sets $Name to the
# block's name, then evals the block's --- attack section, if it has one,
# and dies with "NAME: --- attack: ERROR" when that fails.

use strict;
use warnings;

use Test::Nginx::Socket ();

# True on the block's last response, unless Test::Nginx runs the block dry;
# takes a response body check's arguments.
sub last_response {
    my ($block, $body, $req_idx, $repeated_req_idx, $dry_run) = @_;
    my $requests = $block->pipelined_requests // $block->request;
    return 0 if $req_idx != (ref $requests eq 'ARRAY' ? @$requests : 1) - 1;
    return !$dry_run;
}

sub install {
    my ($section, $name, $run) = @_;
    Test::Nginx::Socket::add_response_body_check(sub {
        my ($block) = @_;
        return unless last_response(@_);
        $$name = $block->name;
        my $code = $block->$section;
        return unless defined $code;
        $run->($code);
        die "$$name: --- $section: $@" if $@;
    });
}

1;

package TicketLoad;

# Concurrent load for Test::Nginx::Socket blocks, checked through the
# documented add_response_body_check hook, so it runs the same under the real
# Test::Nginx and under the project's fallback runner.
#
# A block opts in with these sections (all but the first optional):
#
#   --- concurrent_load: CLIENTS CONNECTIONS REQUESTS URI
#       CLIENTS processes each open CONNECTIONS keep-alive connections, one
#       after another, and pipeline REQUESTS GETs of URI on each.
#   --- concurrent_tickets: FIRST..LAST
#       The tickets of every 200 response, counted together with the tickets
#       in the block's own responses, are exactly FIRST..LAST: no duplicate,
#       no gap. Bodies are "N\n" or, for batches, "FIRST LAST\n".
#   --- concurrent_refusals: STATUS
#       Every non-200 response has this status (default: none allowed).
#   --- concurrent_workers: N
#       At least N distinct worker pids answered (the location must add an
#       "X-Worker: $pid" header).
#
# Loopback only; every socket has a timeout, so a stuck server fails the test
# instead of hanging it.

use strict;
use warnings;

use IO::Socket::INET;
use POSIX ();
use Test::More;
use Test::Nginx::Socket;

our $Timeout = 20;

my %own_tickets;    # tickets from the block's own requests, by block name

sub tickets_of_body {
    my ($body) = @_;
    return () unless defined $body;
    return ($1 .. $2) if $body =~ /^(\d+) (\d+)\n\z/;
    return ($1)       if $body =~ /^(\d+)\n\z/;
    return ();
}

# One client process: returns lines "STATUS PID TICKETS..." on its pipe.
sub run_client {
    my ($port, $connections, $requests, $uri, $out) = @_;
    for (1 .. $connections) {
        my $sock = IO::Socket::INET->new(
            PeerAddr => '127.0.0.1', PeerPort => $port,
            Proto => 'tcp', Timeout => $Timeout,
        ) or die "connect: $!";
        my $req = '';
        for my $i (1 .. $requests) {
            my $close = $i == $requests ? "Connection: close\r\n" : '';
            $req .= "GET $uri HTTP/1.1\r\nHost: localhost\r\n$close\r\n";
        }
        print $sock $req;
        my $raw = '';
        my $deadline = time + $Timeout;
        while (time < $deadline) {
            my $n = sysread($sock, my $chunk, 65536);
            last unless $n;
            $raw .= $chunk;
        }
        close $sock;
        my $got = 0;
        while ($raw =~ /\G(HTTP\/1\.1 (\d+)[^\r]*\r\n(.*?)\r\n\r\n)/gcs) {
            my ($status, $headers) = ($2, $3);
            my ($len) = $headers =~ /^Content-Length:\s*(\d+)/mi;
            my ($pid) = $headers =~ /^X-Worker:\s*(\d+)/mi;
            my $body = substr($raw, pos($raw), $len // 0);
            pos($raw) = pos($raw) + ($len // 0);
            print $out join(' ', $status, $pid // 0, tickets_of_body($body)), "\n";
            $got++;
        }
        print $out "missing ", $requests - $got, "\n" if $got != $requests;
    }
}

sub check {
    my ($block, $body, $req_idx, $repeated_req_idx, $dry_run) = @_;
    my $spec = $block->concurrent_load;
    return unless defined $spec;
    my $name = $block->name;
    push @{ $own_tickets{$name} }, tickets_of_body($body);

    # Run the load after the block's last own request.
    my $requests_in_block = $block->pipelined_requests // $block->request;
    my $count = ref $requests_in_block eq 'ARRAY' ? @$requests_in_block : 1;
    return if $req_idx != $count - 1;

    SKIP: {
        skip "$name - concurrent load skipped: $dry_run", 1 if $dry_run;
        my ($clients, $connections, $requests, $uri) = split ' ', $spec;
        my $port = Test::Nginx::Socket::server_port_for_client();
        my @readers;
        for (1 .. $clients) {
            pipe(my $reader, my $writer) or die "pipe: $!";
            my $pid = fork // die "fork: $!";
            if ($pid == 0) {
                close $reader;
                eval { run_client($port, $connections, $requests, $uri, $writer); 1 }
                    or print $writer "error $@\n";
                close $writer;
                POSIX::_exit(0);
            }
            close $writer;
            push @readers, [$pid, $reader];
        }
        my (@tickets, %workers, %refusals, @problems);
        my $responses = 0;
        for my $r (@readers) {
            my ($pid, $reader) = @$r;
            while (my $line = <$reader>) {
                chomp $line;
                if ($line =~ /^(missing|error) /) { push @problems, $line; next }
                my ($status, $worker, @t) = split ' ', $line;
                $responses++;
                $workers{$worker} = 1 if $worker;
                if ($status == 200) { push @tickets, @t } else { $refusals{$status}++ }
            }
            waitpid $pid, 0;
        }
        my @all = sort { $a <=> $b } @tickets, @{ delete $own_tickets{$name} || [] };

        is(join(', ', @problems), '', "$name - every concurrent request answered");
        is($responses, $clients * $connections * $requests,
           "$name - $responses concurrent responses");

        if (defined(my $range = $block->concurrent_tickets)) {
            my ($first, $last) = $range =~ /(\d+)\s*\.\.\s*(\d+)/
                or die "$name: bad concurrent_tickets \"$range\"";
            my %seen;
            my @dups = grep { $seen{$_}++ } @all;
            is(scalar(@dups), 0, "$name - no ticket issued twice"
               . (@dups ? " (e.g. @dups[0 .. ($#dups < 4 ? $#dups : 4)])" : ''));
            is(scalar(@all), $last - $first + 1, "$name - ticket count");
            is("$all[0]..$all[-1]", "$first..$last", "$name - one contiguous range")
                if @all;
        }

        my $allowed = $block->concurrent_refusals;
        my @bad = grep { !defined $allowed || $_ != $allowed } keys %refusals;
        is("@bad", '', "$name - no unexpected status");

        if (defined(my $n = $block->concurrent_workers)) {
            cmp_ok(scalar(keys %workers), '>=', $n, "$name - answered by $n+ workers");
        }
    }
}

Test::Nginx::Socket::add_response_body_check(\&check);

1;

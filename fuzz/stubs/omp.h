// The two OpenMP calls core/graph.cpp makes (set_num_threads, get_num_threads), declared for the fuzz build,
// which links no OpenMP runtime; fuzz_load.cpp defines them. Only fuzz/run.sh puts this folder on the path.
#pragma once
extern "C" {
void omp_set_num_threads(int n);
int omp_get_max_threads(void);
}
